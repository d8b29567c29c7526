"""A host task: what the agent is asked to run, what it reports, and what runs it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str], Awaitable[None]]


@dataclass
class TaskSpec:
    id: str
    lang: int
    script: str
    args: list[str]
    account: str
    timeout: int
    env: dict[str, str]
    max_output: int
    # give the script a file to write ``name=value`` lines to (variables it sets)
    collect_vars: bool = False
    # the args are a sensitive parameter: never on a command line (see script_args)
    sensitive_args: bool = False


@dataclass
class TaskResult:
    status: int
    exit_code: int
    start_ms: int
    end_ms: int
    # a line for the log when the agent, not the script, decided the outcome
    message: str = ""
    # what the script wrote to $JOBFLEET_VARS_FILE, when the task asked for it
    variables: str | None = None


class Executor(Protocol):
    async def run(
        self,
        spec: TaskSpec,
        on_output: OutputCallback,
        on_started: Callable[[int], None] | None = None,
    ) -> TaskResult: ...

    def kill(self, task_id: str, reason: str = "terminate") -> bool: ...
