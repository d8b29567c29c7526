"""The agent answers every request the server makes, even when its answer cannot be sent
as it is: the server would otherwise wait on it until its own timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jobfleet.agent.connection import Agent
from jobfleet.agent.settings import AgentSettings
from jobfleet.domain import protocol


async def test_an_answer_that_cannot_be_encoded_is_answered_as_an_error(tmp_path: Path) -> None:
    agent = Agent(AgentSettings(server="http://127.0.0.1:9", state_dir=tmp_path / "state",
                                ip="127.0.0.1"))
    sent: list[Any] = []

    async def work(request: str, message: Any) -> protocol.Reply:
        # a lone surrogate: text no JSON encoder writes as UTF-8
        return protocol.reply(request, status=0, error="\ud800")

    agent._work = work  # type: ignore[method-assign]
    agent._send = sent.append  # type: ignore[method-assign]
    try:
        agent._answer({"t": "file_list", "id": "r1"})  # type: ignore[typeddict-item]
        for _ in range(100):
            if sent or not agent._requests:
                break
            await asyncio.sleep(0.01)
        assert len(sent) == 1, sent
        assert sent[0]["id"] == "r1" and sent[0]["status"] != 0, sent
        assert "could not be encoded" in sent[0]["error"], sent
    finally:
        await agent.stop()
