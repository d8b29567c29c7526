"""What an operator reads in a node's log while PostgreSQL is away: one line per
background loop saying the database cannot be reached, not a traceback of the
driver's internals on every turn of every loop. A real node process, PostgreSQL
refusing connections for seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.cluster import cluster, needs_cluster
from tests.integration.test_cluster_failures import database_admin, drop_connections


async def test_a_database_outage_logs_one_line_per_loop_and_no_traceback(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=1) as c, \
            database_admin(database_url) as (admin, name):
        node = c.nodes[0]
        before = node.log_path.stat().st_size if node.log_path.exists() else 0
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await drop_connections(admin, name)
        # several turns of the lease loop (lease_renew 0.5 s) and the revocation watch
        await asyncio.sleep(3.0)
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await asyncio.sleep(1.5)
        await node.stop()
        await node.output()
        text = node.log_path.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in text, text[:4000]
    assert "lease_loop_failed reason=database_unreachable error=" in text, text[:4000]
    assert "revocation_check_failed reason=database_unreachable" in text, text[:4000]
    # once per loop, not once per turn
    assert text.count("lease_loop_failed") == 1, text[:4000]
