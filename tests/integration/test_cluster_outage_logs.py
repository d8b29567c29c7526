"""What an operator reads in a node's log while PostgreSQL is away: one line per
background loop saying the database cannot be reached, not a traceback of the
driver's internals on every turn of every loop. A real node process, PostgreSQL
refusing connections for seconds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from tests.integration.cluster import cluster, needs_cluster
from tests.integration.harness import eventually
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


async def test_console_pages_while_the_database_is_away_answer_503_not_a_traceback(
        tmp_path: Path, database_url: str) -> None:
    """As the API does: 1240001 with HTTP 503, and the page again once it is back."""
    needs_cluster(database_url, redis=False)
    async with cluster(tmp_path, database_url, size=1, with_redis=False) as c, \
            database_admin(database_url) as (admin, name):
        node = c.nodes[0]
        async with httpx.AsyncClient(base_url=node.url, trust_env=False, timeout=30) as http:
            login = await http.post("/login", data={
                "username": "admin", "password": c.boot["admin_password"], "next": "/jobs"},
                headers={"Origin": node.url})
            assert login.status_code == 303, login.text
            before = node.log_path.stat().st_size if node.log_path.exists() else 0
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await drop_connections(admin, name)
            try:
                for path in ("/", "/jobs", "/hosts"):
                    page = await http.get(path)
                    assert page.status_code == 503, (path, page.text)
                    assert page.json()["code"] == 1240001, page.text
            finally:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            async def back() -> bool:
                return (await http.get("/jobs")).status_code == 200
            await eventually(back, timeout=30)
        await node.stop()
        await node.output()
        text = node.log_path.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in text, text[:4000]
    assert "request_database_unreachable path=/jobs" in text, text[:4000]
