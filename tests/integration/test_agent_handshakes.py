"""The agent port's TLS handshakes pass a bounded gate: a host that opens more
connections than there are slots and stalls them keeps no agent out, and each stalled
handshake is cut at the gate's timeout."""

from __future__ import annotations

import asyncio

import pytest
from tests.integration.harness import Running

# one backend: the gate holds connections before any request reaches the store
pytestmark = pytest.mark.one_backend


async def test_a_host_stalling_handshakes_keeps_no_agent_out(running: Running) -> None:
    limits = running.server.handshake_limits
    port = running.server.services.agent_channel.port
    assert port is not None
    stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(limits.slots + 16):
            stalled.append(await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.2", 0)))
        # an agent enrolls and connects meanwhile (both over the agent port)
        await running.start_agents(["127.0.14.1"])
        assert (await running.wire.http.get("/healthz")).status_code == 200
        # the server cuts a stalled handshake at the gate's timeout (asyncio's own is 60 s)
        reader = stalled[0][0]
        assert await asyncio.wait_for(reader.read(), limits.timeout + 20) == b""
    finally:
        for _, writer in stalled:
            writer.close()
