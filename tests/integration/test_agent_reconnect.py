"""An agent finds its restarted server through the agent port it knew; the bootstrap
document is asked again only when that port has failed several tries in a row."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from tests.integration.harness import eventually, run_server

from jobfleet.agent.client import Agent, AgentSettings

# one backend: which address the agent tries, and when, is the agent's own doing; a
# server restarted on its database is tested on every backend in test_durability.py
pytestmark = pytest.mark.one_backend


def agent_of(url: str, token: str, state: Path) -> Agent:
    return Agent(AgentSettings(server=url, state_dir=state, ip="127.0.0.1", biz=2,
                               enroll_token=token, heartbeat=2.0, max_backoff=4.0))


async def stop(agent: Agent, task: asyncio.Task[None]) -> None:
    await agent.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def refused(caplog: pytest.LogCaptureFixture) -> int:
    return sum("agent_disconnected" in r.getMessage() and "Connect call failed" in r.getMessage()
               for r in caplog.records)


async def test_an_agent_comes_back_through_its_agent_port_alone(
        tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The server comes back on its agent port but its API answers at another address:
    an agent that asked the bootstrap document after a refusal would never be back."""
    caplog.set_level(logging.INFO, logger="jobfleet.agent.connection")
    async with run_server(tmp_path, database_url) as first:
        agent = agent_of(first.url, first.boot["enroll_token"], tmp_path / "agent")
        task = asyncio.create_task(agent.run_forever())
        await eventually(lambda: asyncio.sleep(0, agent.connected.is_set()), timeout=30)
        agent_port = first.server.services.agent_channel.port
    try:
        await eventually(lambda: asyncio.sleep(0, not agent.connected.is_set()), timeout=30)
        # tries while nothing listens are refused (fewer than would send it to ask)
        await eventually(lambda: asyncio.sleep(0, refused(caplog) >= 2), timeout=30)
        # the API on a new port: the agent's server URL now refuses
        async with run_server(tmp_path, database_url) as second:
            assert second.url != first.url
            assert second.server.services.agent_channel.port == agent_port
            await eventually(lambda: asyncio.sleep(0, agent.connected.is_set()), timeout=30)
            assert agent.channel is not None
            assert agent.channel.base == f"https://127.0.0.1:{agent_port}"
    finally:
        await stop(agent, task)


async def test_an_agent_follows_a_server_that_moved_its_agent_port(
        tmp_path: Path, database_url: str) -> None:
    """The known agent port refuses try after try: the agent asks where it went and
    connects there."""
    async with run_server(tmp_path, database_url) as first:
        agent = agent_of(first.url, first.boot["enroll_token"], tmp_path / "agent")
        task = asyncio.create_task(agent.run_forever())
        await eventually(lambda: asyncio.sleep(0, agent.connected.is_set()), timeout=30)
        port = int(first.url.rsplit(":", 1)[1])
        old_port = first.server.services.agent_channel.port
    try:
        (tmp_path / "server" / "agent_port").unlink()  # a restart then takes a new port
        async with run_server(tmp_path, database_url, port=port) as second:
            new_port = second.server.services.agent_channel.port
            assert new_port != old_port
            await eventually(lambda: asyncio.sleep(0, agent.connected.is_set()), timeout=30)
            assert agent.channel is not None
            assert agent.channel.base == f"https://127.0.0.1:{new_port}"
    finally:
        await stop(agent, task)
