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
    # the first page asked is named, the others counted
    told = [line for line in text.splitlines() if "request_database_unreachable" in line]
    assert len(told) == 1 and "request_database_unreachable path=/ request_id=" in told[0], told


async def test_api_requests_while_the_database_is_away_log_one_line_not_one_each(
        tmp_path: Path, database_url: str) -> None:
    """A busy API during an outage: the first failed request is logged with its id, the
    others are counted, and the end is one line; every caller has its own id in the
    answer."""
    needs_cluster(database_url, redis=False)
    async with cluster(tmp_path, database_url, size=1, with_redis=False,
                       log_level="info") as c, \
            database_admin(database_url) as (admin, name):
        node, wire = c.nodes[0], c.wires[0]
        assert (await wire.v3("get_account_list", {"bk_biz_id": 2}, method="GET"))["result"]
        before = node.log_path.stat().st_size if node.log_path.exists() else 0
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await drop_connections(admin, name)
        try:
            answers = []
            for _ in range(4):
                answers += await asyncio.gather(*(
                    wire.v3("get_account_list", {"bk_biz_id": 2}, method="GET")
                    for _ in range(10)))
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert all(a["code"] == 1240001 for a in answers), answers
        ids = {a["job_request_id"] for a in answers}
        assert len(ids) == len(answers), answers

        async def back() -> bool:
            answer = await wire.v3("get_account_list", {"bk_biz_id": 2}, method="GET")
            return bool(answer["result"])
        await eventually(back, timeout=30)
        await node.stop()
        await node.output()
        text = node.log_path.read_bytes()[before:].decode(errors="replace")
    assert "Traceback" not in text, text[:4000]
    told = [line for line in text.splitlines() if "request_database_unreachable" in line]
    assert len(told) == 1, told
    assert told[0].split("request_id=")[1].split()[0] in ids, told
    ended = [line for line in text.splitlines() if "request_database_back after=" in line]
    assert len(ended) == 1, text[:4000]
    failures = int(ended[0].split("failures=")[1].split()[0])
    assert failures >= len(answers), ended
