"""A host task: what the agent is asked to run, what it reports, and what runs it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from jobfleet.agent import jsonwire
from jobfleet.agent.output import split_text
from jobfleet.agent.settings import AgentSettings
from jobfleet.agent.spool import Spool
from jobfleet.domain import protocol
from jobfleet.domain.status import FileLogStatus, HostStatus

logger = logging.getLogger(__name__)

OutputCallback = Callable[[str], Awaitable[None]]
T = TypeVar("T")
# what of an error's text goes into a log, a task's log or a reply to the server: it may
# quote a value of any size
ERROR_CHARS = 200
# and of why a task failed (an error of the agent's own may explain itself at length)
TASK_ERROR_CHARS = 4000


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


Work = Callable[[OutputCallback], Awaitable[tuple[TaskResult, list[protocol.FileItem] | None]]]
Send = Callable[[protocol.AgentMessage], None]

# output is held this long so that a short task's output rides in its done message
HOLD_SECONDS = 0.05


def script_spec(task_id: str, message: protocol.ScriptRun, settings: AgentSettings) -> TaskSpec:
    """The script task a run message asks for, with what every script finds in its environment.

    The executor's view of ``protocol.ScriptRun``: defaults filled in, the agent's own
    variables in the environment, and the flags named for what the executor does."""
    return TaskSpec(
        id=task_id,
        lang=_field("lang", lambda: int(message["lang"])),
        # the agent's wire holds only UTF-8: another script's bytes come in ``script_b64``,
        # and the staged file gets them back from this string (``staging.staged_bytes``)
        script=_field(
            "script",
            lambda: protocol.script_bytes(message).decode("utf-8", errors="surrogateescape"),
        ),
        args=_field("args", lambda: [str(a) for a in message.get("args") or []]),
        account=str(message.get("account") or ""),
        timeout=_field("timeout", lambda: int(message.get("timeout") or 7200)),
        env={
            "JOBFLEET_HOST_IP": settings.ip,
            "JOBFLEET_CLOUD_ID": str(settings.bk_cloud_id),
            "JOBFLEET_TASK_ID": task_id,
            **_field(
                "env", lambda: {str(k): str(v) for k, v in (message.get("env") or {}).items()}
            ),
        },
        max_output=_field(
            "max_output", lambda: int(message.get("max_output") or 10 * 1024 * 1024)
        ),
        collect_vars=bool(message.get("collect_vars")),
        sensitive_args=bool(message.get("sensitive")),
    )


class UnreadableField(ValueError):
    """A field of a run message this agent cannot read; its text names the field."""


# what a message the agent cannot read may raise while it is read
UNREADABLE = (KeyError, TypeError, ValueError, AttributeError, OverflowError)


def _field(name: str, read: Callable[[], T]) -> T:
    """A run message's field as the executor takes it; one this agent cannot read (a
    newer server's type, or none) is named in the error, which ends the task."""
    try:
        return read()
    except UNREADABLE as exc:
        raise UnreadableField(
            f"field {name!r}: {type(exc).__name__}: {str(exc)[:ERROR_CHARS]}"
        ) from exc


DownloadOutcome = tuple[TaskResult, list[protocol.FileItem] | None]
FILE_FAILED = int(FileLogStatus.FAILED)


def killed_download(
    reason: str, start_ms: int, task: protocol.DownloadRun, finals: list[protocol.FileItem]
) -> DownloadOutcome:
    """The result of a download the server killed (a terminate, or the step's timeout):
    the items that ended before keep their state, the others failed with the reason."""
    if reason == "timeout":
        status, what = HostStatus.GSE_TIMEOUT, "timed out"
    else:
        status, what = HostStatus.GSE_TASK_TERMINATE_SUCCESS, f"terminated ({reason})"
    message = f"jobfleet-agent: download {what}; its unfinished file was removed"
    ended = {item["n"] for item in finals}
    items = [*finals]
    for item in task.get("items") or []:
        if int(item["n"]) not in ended:
            items.append({"n": int(item["n"]), "status": FILE_FAILED, "progress": 0,
                          "log": message})
    return TaskResult(int(status), 1, start_ms, now_ms(), message), items


async def execute(task_id: str, work: Work, spool: Spool, send: Send) -> None:
    """Run ``work``, stream its output and report its end, each through the spool first."""
    seq = 0
    held: list[str] = []
    timer: asyncio.TimerHandle | None = None

    def emit(data: str, files: list[protocol.FileItem] | None = None) -> None:
        nonlocal seq
        seq += 1
        spool.add_output(task_id, seq, data, files)
        send(protocol.output(task_id, seq, data, files))

    def flush() -> None:
        nonlocal timer
        timer = None
        if not held:
            return
        data = "".join(held)
        held.clear()
        for piece in split_text(data):
            emit(piece)

    async def on_output(data: str) -> None:
        nonlocal timer
        held.append(data)
        if timer is None:
            timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, flush)

    files: list[protocol.FileItem] | None = None
    try:
        result, files = await work(on_output)
    except Exception as exc:
        logger.exception("task_failed task=%s", task_id)
        result = TaskResult(
            status=int(HostStatus.GSE_TASK_ERROR),
            exit_code=-1,
            start_ms=now_ms(),
            end_ms=now_ms(),
            message=f"jobfleet-agent: {type(exc).__name__}: {str(exc)[:TASK_ERROR_CHARS]}",
        )
    if timer is not None:
        timer.cancel()
    tail = "".join(held)
    if result.message:
        tail += (
            ("" if not tail or tail.endswith("\n") else "\n") + result.message.rstrip("\n") + "\n"
        )
    # what does not fit one message goes ahead of the done message
    pieces = split_text(tail)
    for piece in pieces[:-1]:
        emit(piece)
    tail = pieces[-1]
    if files is not None:
        step = protocol.AGENT_FILE_ITEMS
        while len(files) > step:
            emit("", files[:step])
            files = files[step:]
    variables = result.variables
    if variables and len(jsonwire.dumps(variables)) > protocol.AGENT_FRAME_BYTES:
        logger.warning("task_variables_too_large task=%s", task_id)
        variables = None
        tail += "jobfleet-agent: the variables file was too large to report\n"
    done = protocol.done(
        task_id,
        seq + 1,
        status=result.status,
        exit=result.exit_code,
        start=result.start_ms,
        end=result.end_ms,
        data=tail,
        files=files,
        vars=variables,
    )
    spool.finish(task_id, done)
    send(done)


def now_ms() -> int:
    return int(time.time() * 1000)
