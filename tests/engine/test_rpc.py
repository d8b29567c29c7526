"""Requests to one agent: only that host may answer, and a reconnect asks again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.engine.test_results import Link

from jobfleet.domain import protocol
from jobfleet.engine.rpc import AgentRpc, AgentUnavailable


class Agents:
    def __init__(self) -> None:
        self.links: dict[int, Link] = {}

    def for_host(self, host: int) -> Link | None:
        return self.links.get(host)


async def _file_list_asked() -> tuple[Agents, AgentRpc, asyncio.Future[dict[str, Any]]]:
    """Host 1's agent asked for a file list, the request on its way; the call waiting."""
    agents = Agents()
    agents.links[1] = Link(1)
    rpc = AgentRpc(agents, agent_lost_grace=0.5)
    call = asyncio.ensure_future(rpc.call(1, {"t": "file_list", "patterns": ["/x"]}, 5))
    while not agents.links[1].sent:
        await asyncio.sleep(0.01)
    return agents, rpc, call


async def test_the_reply_of_the_asked_host_is_returned() -> None:
    agents, rpc, call = await _file_list_asked()
    request = agents.links[1].sent[0]
    assert request["t"] == "file_list" and request["patterns"] == ["/x"]
    # another host cannot answer for it, nor can an unknown id
    rpc.reply(Link(2), {"t": "reply", "id": request["id"], "files": []})
    rpc.reply(agents.links[1], {"t": "reply", "id": "other"})
    await asyncio.sleep(0.05)
    assert not call.done()
    rpc.reply(agents.links[1], {"t": "reply", "id": request["id"], "files": ["ok"]})
    assert (await call)["files"] == ["ok"]


async def test_a_new_connection_is_asked_again() -> None:
    agents = Agents()
    first = agents.links[1] = Link(1)
    rpc = AgentRpc(agents, agent_lost_grace=0.5)
    call = asyncio.ensure_future(rpc.call(1, {"t": "file_list"}, 5))
    while not first.sent:
        await asyncio.sleep(0.01)
    second = agents.links[1] = Link(1)
    while not second.sent:
        await asyncio.sleep(0.05)
    assert second.sent[0]["id"] != first.sent[0]["id"]
    rpc.reply(second, {"t": "reply", "id": second.sent[0]["id"]})
    assert (await call)["t"] == "reply"


async def test_an_absent_agent_and_a_silent_one_fail() -> None:
    agents = Agents()
    rpc = AgentRpc(agents, agent_lost_grace=0.2)
    with pytest.raises(AgentUnavailable):
        await rpc.call(1, {"t": "file_list"}, 5)
    agents.links[1] = Link(1)
    with pytest.raises(TimeoutError):
        await rpc.call(1, {"t": "file_list"}, 0.2)


async def test_a_reply_comes_back_as_text_any_database_holds() -> None:
    """NUL and lone surrogates in what an agent answers are mapped as in its output; listed
    names are left as sent, for the engine to refuse."""
    agents, rpc, call = await _file_list_asked()
    request_id = agents.links[1].sent[0]["id"]
    rpc.reply(agents.links[1], {
        "t": "reply", "id": request_id, "error": "a\0b", "proc": {"message": "\ud800"},
        "files": [{"path": "/x/\ud800\0", "rel": "y", "size": 3}], "missing": ["m\0"]})
    answer = await call
    assert answer["error"] == "a\u2400b"
    assert answer["files"] == [{"path": "/x/\ud800\0", "rel": "y", "size": 3}]
    assert answer["missing"] == ["m\u2400"]
    assert answer["proc"] == {"message": "\ufffd"}


async def test_a_reply_nested_without_end_is_refused_and_fails_the_request_at_once() -> None:
    """An honest agent answers once: the request fails with why rather than waiting to
    its timeout for an answer that will not come."""
    agents, rpc, call = await _file_list_asked()
    request = agents.links[1].sent[0]
    deep: list[Any] = []
    inner = deep
    for _ in range(5000):
        inner.append([])
        inner = inner[0]
    rpc.reply(agents.links[1], {"t": "reply", "id": request["id"], "error": "x", "extra": deep})
    answer = await asyncio.wait_for(call, 10)
    assert answer["status"] and "refused" in answer["error"], answer
    assert "extra" not in answer and "files" not in answer


async def test_a_request_never_delivered_ends_at_its_deadline_without_asking_again() -> None:
    """The node holding the agent says each time it could not hand the request over: once
    the deadline passes in the pause before asking again, the call ends as a silent
    agent's does, rather than sending the request once more (or, with the agent gone
    meanwhile, failing as if it had never been there)."""
    agents = Agents()
    rpc = AgentRpc(agents, agent_lost_grace=0.5)

    class Undelivering(Link):
        def send(self, message: dict[str, Any]) -> None:
            super().send(message)
            rpc.reply(self, protocol.undelivered_reply(message["id"]))

    link = agents.links[1] = Undelivering(1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rpc.call(1, {"t": "file_list"}, 0.2), 5)
    assert len(link.sent) == 1
