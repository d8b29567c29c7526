"""A real agent sent a run it cannot read (a newer server's field of another type) ends
that host's task at once with the reason; the job's other hosts run as usual."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.harness import Running

from jobfleet.domain import protocol

SKEWED = "127.0.0.2"
PLAIN = "127.0.0.3"


async def test_a_run_the_agent_cannot_read_fails_its_host_at_once(running: Running) -> None:
    await running.start_agents([SKEWED, PLAIN])
    cred = running.agents[SKEWED][0].credential
    assert cred is not None
    conn = running.server.registry.for_host(cred.bk_host_id)
    assert conn is not None
    before = conn.refuses

    def skew(message: Any) -> bool:
        # what a server of a later release might send: ``lang`` as a name, not a number
        if message.get("t") == protocol.RUN:
            message["lang"] = "bash-" + "9" * 5000
        return before(message) if before is not None else False

    conn.refuses = skew
    started = time.monotonic()
    sub = await running.wire.run_script("echo hi", [SKEWED, PLAIN])
    data = await running.wire.wait(sub["job_instance_id"], timeout=30)
    took = time.monotonic() - started
    assert took < 10, took
    step = data["step_instance_list"][0]
    hosts = {h["ip"]: h for h in step["step_ip_result_list"]}
    assert hosts[SKEWED]["status"] == 399, hosts
    assert hosts[PLAIN]["status"] == 9, hosts
    logs = await running.wire.logs(sub["job_instance_id"], step["step_instance_id"],
                                   [SKEWED, PLAIN])
    assert "could not read the server's 'run' message: field 'lang'" in logs[SKEWED], logs
    # only a bounded part of the bad value comes back
    assert "9" * 300 not in logs[SKEWED], len(logs[SKEWED])
    assert logs[PLAIN].strip() == "hi", logs
