"""The database holds the check values of the keys its servers must share (its secret
key, its agent CA): a server whose own differ ends at once, before it serves or writes
anything, with one line naming where its key comes from; alone or in a cluster, with
Redis or without. Real server processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import Connection, inspect, select
from tests.conftest import upgrade_to
from tests.integration.cluster import CLUSTER_ENGINE, Node, cluster, needs_cluster
from tests.integration.harness import Proc, eventually, free_port

from jobfleet.store import tables
from jobfleet.store.database import Database
from jobfleet.store.revisions import shipped_head
from jobfleet.store.secrets import Cipher


def _proc(data_dir: Path, database_url: str, env: dict[str, str] | None = None,
          redis_url: str | None = None) -> Proc:
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"data_dir": str(data_dir), "port": free_port(), "agent_port": free_port(),
           "database_url": database_url, "redis_url": redis_url, "engine": CLUSTER_ENGINE}
    return Proc(["tests.integration.cluster_node", json.dumps(cfg)], env or {})


async def refused(data_dir: Path, database_url: str, env: dict[str, str] | None = None,
                  redis_url: str | None = None) -> str:
    """The one line of a server that must not start (it ends at once, status 2)."""
    proc = _proc(data_dir, database_url, env, redis_url)
    await proc.start()
    code, text = await proc.ended()
    assert code == 2, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "database_keys_refused" in line]
    assert len(lines) == 1, text
    assert "docs/deploy.md" in lines[0], text
    return lines[0]


def _dump(conn: Connection) -> dict[str, list[Any]]:
    return {
        table.name: [tuple(row) for row in conn.execute(
            select(table).order_by(*table.primary_key.columns))]
        for table in tables.metadata.sorted_tables
    }


async def snapshot(database_url: str) -> dict[str, list[Any]]:
    db = Database(database_url)
    try:
        async with db.connect() as conn:
            return await conn.run_sync(_dump)
    finally:
        await db.close()


async def stored(database_url: str) -> dict[str, str]:
    return {k: v for k, v, _ in (await snapshot(database_url))["key_checks"]}


def _values(data_dir: Path) -> dict[str, str]:
    from jobfleet.domain.enrollment import ca_fingerprint

    return {"secret.key": Cipher.from_data_dir(data_dir).check_value(),
            "tls/ca.pem": ca_fingerprint((data_dir / "tls" / "ca.pem").read_text())}


async def test_a_server_restarted_with_another_key_is_refused_and_writes_nothing(
        tmp_path: Path, database_url: str) -> None:
    home = tmp_path / "server"
    node = Node("one", home, database_url, None, CLUSTER_ENGINE)
    await node.start()
    await node.stop()
    before = await snapshot(database_url)
    assert {k: v for k, v, _ in before["key_checks"]} == _values(home)
    key = (home / "secret.key").read_bytes()

    # the data directory's key replaced
    (home / "secret.key").write_bytes(Fernet.generate_key())
    line = await refused(home, database_url)
    assert "files=secret.key error=" in line and str(home / "secret.key") in line, line
    assert await snapshot(database_url) == before

    # the right file, but another key in the environment, which wins
    (home / "secret.key").write_bytes(key)
    other = Fernet.generate_key().decode()
    line = await refused(home, database_url, {"JOBFLEET_SECRET_KEY": other})
    assert "files=secret.key error=" in line and "JOBFLEET_SECRET_KEY" in line, line
    assert await snapshot(database_url) == before

    # its own key back: it serves
    await node.start()
    await node.stop()


async def test_a_node_with_other_keys_started_while_redis_is_down_is_refused(
        tmp_path: Path, database_url: str) -> None:
    needs_cluster(database_url)
    async with cluster(tmp_path, database_url, size=1) as c:
        first = c.nodes[0]
        await c.redis.stop()
        line = await refused(tmp_path / "lone", database_url, redis_url=c.redis.url)
        assert "files=secret.key,tls/ca.pem error=" in line, line
        assert await stored(database_url) == _values(first.data_dir)
        # the key copied, the CA forgotten
        half = tmp_path / "half"
        half.mkdir()
        shutil.copy(first.data_dir / "secret.key", half / "secret.key")
        line = await refused(half, database_url, redis_url=c.redis.url)
        assert "files=tls/ca.pem error=" in line, line
        await c.redis.start()
        assert (await c.wires[0].http.get(f"{first.url}/readyz")).status_code == 200


async def test_servers_started_at_once_on_an_empty_database_agree(
        tmp_path: Path, empty_database_url: str) -> None:
    needs_cluster(empty_database_url, redis=False)
    dirs = [tmp_path / f"node{i}" for i in range(3)]
    procs = [_proc(d, empty_database_url) for d in dirs]
    await asyncio.gather(*(p.start() for p in procs))
    ports = [json.loads(p.args[1])["port"] for p in procs]
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            async def settled() -> list[int | None] | None:
                states: list[int | None] = []
                for proc, port in zip(procs, ports, strict=True):
                    assert proc.proc is not None
                    if proc.proc.returncode is not None:
                        states.append(proc.proc.returncode)
                        continue
                    try:
                        ok = (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code
                    except httpx.HTTPError:
                        return None
                    if ok != 200:
                        return None
                    states.append(None)
                return states

            states = await eventually(settled, timeout=90)
        serving = [i for i, s in enumerate(states) if s is None]
        assert len(serving) == 1, states
        assert all(s == 2 for i, s in enumerate(states) if i != serving[0]), states
        assert await stored(empty_database_url) == _values(dirs[serving[0]])
    finally:
        for proc in procs:
            await proc.stop()


async def test_a_server_refused_on_an_older_database_leaves_it_at_its_revision(
        tmp_path: Path, empty_database_url: str) -> None:
    """The keys are compared before the schema is upgraded: a database of before the
    check values were kept, with a password sealed under another key, is left at its
    revision and with its rows, for the servers that hold the key."""
    cipher = Cipher(Fernet.generate_key())
    db = Database(empty_database_url)
    try:
        async with db.begin() as conn:
            await conn.run_sync(upgrade_to("0024_step_hosts_ip"))
            await conn.execute(tables.accounts.insert().values(
                bk_biz_id=2, account="root", alias="root-db", password=cipher.encrypt("pw"),
                create_time=1, last_modify_time=1))
    finally:
        await db.close()

    line = await refused(tmp_path / "stranger", empty_database_url)
    assert "files=secret.key error=the secrets stored in this database were sealed" in line
    db = Database(empty_database_url)
    try:
        assert await db.revisions() == ["0024_step_hosts_ip"]
        async with db.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            rows = (await conn.execute(select(tables.accounts.c.password))).all()
    finally:
        await db.close()
    assert "key_checks" not in names
    assert len(rows) == 1 and cipher.decrypt(rows[0].password) == "pw"


async def test_an_upgraded_database_adopts_the_key_its_secrets_open_with(
        tmp_path: Path, empty_database_url: str) -> None:
    """A database of before the check values were kept, with a sealed password: the
    server whose key opens it is taken for the database's; another is refused."""
    home = tmp_path / "server"
    home.mkdir()
    cipher = Cipher.from_data_dir(home)
    db = Database(empty_database_url)
    try:
        async with db.begin() as conn:
            await conn.run_sync(upgrade_to("0024_step_hosts_ip"))
            await conn.execute(tables.accounts.insert().values(
                bk_biz_id=2, account="root", alias="root-db", password=cipher.encrypt("pw"),
                create_time=1, last_modify_time=1))
    finally:
        await db.close()

    stranger = tmp_path / "stranger"
    line = await refused(stranger, empty_database_url)
    assert "files=secret.key error=the secrets stored in this database were sealed with " \
           "another key" in line, line
    assert str(stranger / "secret.key") in line, line

    node = Node("one", home, empty_database_url, None, CLUSTER_ENGINE)
    await node.start()
    await node.stop()
    assert await stored(empty_database_url) == _values(home)
    db = Database(empty_database_url)
    try:
        assert await db.revisions() == [shipped_head()]
    finally:
        await db.close()
    # and from now on the stored values decide
    line = await refused(stranger, empty_database_url)
    assert "files=secret.key,tls/ca.pem error=this server's" in line, line
