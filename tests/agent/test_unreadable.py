"""A server message the agent cannot read, but whose id it can, is answered at once: a run
ends failed with the reason, a request gets an error. Unanswered, either would hold the
server until the step's timeout."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jobfleet.agent.connection import Agent
from jobfleet.agent.settings import AgentSettings
from jobfleet.agent.task import ERROR_CHARS, UnreadableField
from jobfleet.domain import protocol
from jobfleet.domain.status import HostStatus

TASK = "1:1:1"


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=tmp_path / "state",
                                ip="127.0.0.1"))
    sent: list[Any] = []
    agent._send = sent.append  # type: ignore[method-assign]
    agent.sent = sent  # type: ignore[attr-defined]
    try:
        yield agent
    finally:
        await agent.stop()


async def _sent(agent: Agent, kind: str, within: float = 5.0) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = agent.sent  # type: ignore[attr-defined]
    for _ in range(int(within / 0.01)):
        found = [m for m in sent if m["t"] == kind]
        if found:
            return found
        await asyncio.sleep(0.01)
    return []


def _frame(message: Any) -> bytes:
    return json.dumps(message).encode()


@pytest.mark.parametrize(
    ("field", "value"),
    [("lang", "a newer server's language"), ("timeout", [1]), ("env", ["A=1"]),
     ("args", 5), ("max_output", "lots")],
)
async def test_a_run_with_a_field_the_agent_cannot_read_fails_with_the_field(
        agent: Agent, field: str, value: Any) -> None:
    run = {"t": "run", "id": TASK, "lang": 1, "script": "echo hi", field: value}
    agent._frame(_frame(run))
    [done] = await _sent(agent, protocol.DONE)
    assert done["id"] == TASK and done["status"] == int(HostStatus.GSE_TASK_ERROR), done
    assert f"field {field!r}" in done["data"], done
    assert "could not read the server's 'run' message" in done["data"], done
    # its result waits in the spool like any other, and a repeat does not run it again
    assert agent.spool.holds(TASK)
    agent._frame(_frame(run))
    await asyncio.sleep(0.1)
    assert len([m for m in agent.sent if m["t"] == protocol.DONE]) == 1  # type: ignore[attr-defined]


async def test_a_run_without_a_script_fails_at_once(agent: Agent) -> None:
    agent._frame(_frame({"t": "run", "id": TASK, "lang": 1}))
    [done] = await _sent(agent, protocol.DONE)
    assert "field 'script'" in done["data"], done


async def test_only_a_bounded_part_of_a_bad_value_is_echoed(agent: Agent) -> None:
    agent._frame(_frame({"t": "run", "id": TASK, "lang": "x" * 100_000, "script": "echo"}))
    [done] = await _sent(agent, protocol.DONE)
    assert "field 'lang'" in done["data"], done
    assert len(done["data"]) < 1000, len(done["data"])


@pytest.mark.parametrize("bad_id", [{"a": 1}, ["1"], True, None, "x" * 65, 1.5, ""])
async def test_a_message_whose_id_is_unusable_is_only_logged(
        agent: Agent, bad_id: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    agent._frame(_frame([{"t": "run", "id": bad_id, "lang": "bad", "script": "echo"},
                         {"t": "file_list", "id": bad_id, "files": 5}]))
    await asyncio.sleep(0.2)
    assert agent.sent == []  # type: ignore[attr-defined]
    assert "server_message_refused" in caplog.text


async def test_a_request_with_a_number_for_its_id_is_answered_by_it(agent: Agent) -> None:
    agent._frame(_frame({"t": "dispatch", "id": 7, "slot_id": "one", "message_id": "m",
                         "content": "x"}))
    [reply] = await _sent(agent, protocol.REPLY)
    assert reply["id"] == "7" and reply["status"] == int(HostStatus.GSE_TASK_ERROR), reply


async def test_a_request_that_fails_as_it_is_read_is_answered(agent: Agent) -> None:
    async def unreadable(request: str, message: Any) -> protocol.Reply:
        raise UnreadableField("a field of another type")

    agent._work = unreadable  # type: ignore[method-assign]
    agent._frame(_frame({"t": "proc", "id": "r1", "op": "start"}))
    [reply] = await _sent(agent, protocol.REPLY)
    assert reply["id"] == "r1" and reply["status"] == int(HostStatus.GSE_TASK_ERROR), reply
    assert "could not read the server's 'proc' message" in reply["error"], reply
    assert "a field of another type" in reply["error"], reply


async def test_a_request_that_fails_otherwise_is_answered_with_a_bounded_error(
        agent: Agent) -> None:
    async def failing(request: str, message: Any) -> protocol.Reply:
        raise ValueError("no such peer: " + "x" * 100_000)

    agent._work = failing  # type: ignore[method-assign]
    agent._frame(_frame({"t": "file_seed", "id": "r2"}))
    [reply] = await _sent(agent, protocol.REPLY)
    assert reply["id"] == "r2" and reply["status"] == int(HostStatus.GSE_TASK_ERROR), reply
    # the error as it was, not a reading error, and cut to the one bound
    assert reply["error"].startswith("no such peer: x"), reply["error"][:100]
    assert len(reply["error"]) <= ERROR_CHARS, len(reply["error"])


async def test_a_welcome_whose_stats_period_is_not_a_number_still_counts(
        agent: Agent, caplog: pytest.LogCaptureFixture) -> None:
    welcomed: list[Any] = []
    agent.on_welcome = welcomed.append
    caplog.set_level(logging.WARNING)
    agent._frame(_frame({"t": "welcome", "stats_every": "soon"}))
    assert welcomed and agent._stats is None
    assert "server_welcome_stats_refused" in caplog.text
