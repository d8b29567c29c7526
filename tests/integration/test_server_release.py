"""A stopped in-process server lets go of itself: the demo and embedders start and stop
servers in one process."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from tests.integration.harness import run_server

IPS = ["127.0.0.31", "127.0.0.32"]


async def test_a_stopped_server_is_freed(tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url) as run:
        await run.start_agents(IPS)
        job = await run.wire.run_script("echo released", IPS)
        done = await run.wire.wait(job["job_instance_id"])
        assert done["job_instance"]["status"] == 3, done
        assert await run.wire.logs(job["job_instance_id"], job["step_instance_id"], IPS)
        server = weakref.ref(run.server)
    del run
    gc.collect()
    held = server()
    if held is not None:
        holders = [type(r).__qualname__ for r in gc.get_referrers(held)]
        del held
        raise AssertionError(f"the stopped server is still held, by {holders}")
