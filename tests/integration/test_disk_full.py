"""The server's disk fills up under running jobs: nothing is lost, the operator is told,
and the server carries on by itself once space is freed.

The server's data directory (its SQLite database, its blobs) is a small tmpfs of the
test's own, filled with a file and emptied again by deleting it. Needs root to mount;
skipped otherwise. SQLite only: PostgreSQL's disk being full is the database's own
outage, which the cluster tests cover as the database away."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from tests.integration.harness import (
    Proc,
    Running,
    Wire,
    b64,
    eventually,
    free_port,
    run_server,
)

IPS = ["127.0.0.2", "127.0.0.3"]
DISK_SIZE = "24m"


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """``where`` on a tmpfs of ``size``, unmounted whatever happens; skips the test where
    mounting is not possible."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """The server's data directory on a tmpfs of ``DISK_SIZE``."""
    with tmpfs(tmp_path / "server", DISK_SIZE) as where:
        yield where


def fill(disk: Path, leave: int = 0) -> None:
    """Take every free byte of ``disk`` but ``leave`` (what a runaway log or export does)."""
    # SQLite reuses its write-ahead log's space after a checkpoint: a log grown earlier
    # would take the first writes whatever the disk's room, so it is emptied here and
    # every write then needs the disk
    if (disk / "jobfleet.db").exists():
        with closing(sqlite3.connect(disk / "jobfleet.db", timeout=10)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        if leave:
            os.ftruncate(fd, os.fstat(fd).st_size - leave)
    finally:
        os.close(fd)
    room = os.statvfs(disk)
    assert room.f_bavail * room.f_frsize >= leave and (leave or room.f_bavail == 0)


async def all_closed(db: Path) -> None:
    """Wait until no connection of this process holds ``db`` open. A connection the
    server's stop left to the garbage collector keeps SQLite's shared-memory file on
    disk: a later start on the full disk then finds it made and opens without
    needing a byte, where an operator's restarted server has to make it."""
    shm = db.with_name(db.name + "-shm")
    gc.collect()
    for _ in range(400):
        if not shm.exists():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{shm} still there: a connection to {db} is still open")


def free(disk: Path) -> None:
    (disk / "filler").unlink()


async def hosts_running(wire: Wire, job_id: int) -> bool:
    hosts = (await wire.status(job_id))["step_instance_list"][0]["step_ip_result_list"]
    return all(h["status"] == 7 for h in hosts)


def intact(database: Path) -> bool:
    with closing(sqlite3.connect(database)) as conn:
        return bool(conn.execute("PRAGMA integrity_check").fetchone() == ("ok",))


async def test_results_that_arrive_while_the_disk_is_full_wait_and_are_all_kept(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    run: Running
    async with run_server(tmp_path, f"sqlite+aiosqlite:///{small_disk}/jobfleet.db") as run:
        await run.start_agents(IPS)
        wire = run.wire
        job = await wire.run_script("sleep 2; seq 1 20000; echo end", IPS)
        await eventually(lambda: hosts_running(wire, job["job_instance_id"]))
        await asyncio.to_thread(fill, small_disk)
        # the hosts finish and send their output and results while nothing can be written
        await asyncio.sleep(4)
        status = await wire.status(job["job_instance_id"])
        assert not status["finished"], status
        await asyncio.to_thread(free, small_disk)
        status = await wire.wait(job["job_instance_id"], timeout=30)
        assert status["job_instance"]["status"] == 3, status
        hosts = status["step_instance_list"][0]["step_ip_result_list"]
        assert [h["status"] for h in hosts] == [9, 9], hosts
        logs = await wire.logs(job["job_instance_id"],
                               status["step_instance_list"][0]["step_instance_id"], IPS)
        expected = "".join(f"{i}\n" for i in range(1, 20001)) + "end\n"
        assert logs == {ip: expected for ip in IPS}
        # the operator is told once where and why, and once that it is over
        waiting = [r.getMessage() for r in caplog.records
                   if r.getMessage().startswith("result_write_waiting_for_database")]
        assert len(waiting) == 1, waiting
        assert f"reason=ENOSPC path={small_disk / 'jobfleet.db'}" in waiting[0]
        assert any(r.getMessage().startswith("result_write_resumed") for r in caplog.records)
        assert not [r for r in caplog.records if r.getMessage().startswith("result_refused")]
        # the background loops say it in a line each too, not a traceback a turn
        tracebacks = [r.getMessage() for r in caplog.records
                      if r.exc_info and r.name.startswith("jobfleet")]
        assert not tracebacks, tracebacks
        # the server goes on by itself, and what it stored before is whole
        again = await wire.run_script("echo again", IPS)
        assert (await wire.wait(again["job_instance_id"]))["job_instance"]["status"] == 3
    assert intact(small_disk / "jobfleet.db")


V3 = "/api/bk-job/prod/api/v3"


async def test_the_api_answers_a_full_disk_with_the_envelope_and_reads_go_on(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    # each refused request's id, logged at debug
    caplog.set_level(logging.DEBUG, logger="jobfleet.api.errors")
    async with run_server(tmp_path, f"sqlite+aiosqlite:///{small_disk}/jobfleet.db") as run:
        await run.start_agents(IPS)
        wire = run.wire
        done = await wire.run_script("echo before", IPS)
        before = await wire.wait(done["job_instance_id"])
        await asyncio.to_thread(fill, small_disk)
        body = {"bk_scope_type": "biz", "bk_scope_id": "2", "script_content": b64("echo x"),
                "script_language": 1, "account_alias": "root",
                "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}}
        answer = await asyncio.wait_for(
            wire.http.post(f"{V3}/fast_execute_script", json=body, headers=wire.headers()), 30)
        assert answer.status_code == 503, answer.text
        refused = answer.json()
        assert refused["result"] is False and refused["code"] == 1240001, refused
        assert "disk" in refused["message"] and "full" in refused["message"], refused
        # a file sent while the blob store is full: refused alike, nothing half-written left
        answer = await wire.http.post("/api/jobfleet/v1/files",
                                      params={"name": "big.bin", "bk_biz_id": 2},
                                      content=b"x" * (1 << 20), headers=wire.headers())
        assert answer.status_code == 503 and answer.json()["code"] == 1240001, answer.text
        # a busy API: each caller refused with its own id, the log not a line each
        ids = {refused["job_request_id"], answer.json()["job_request_id"]}
        for _ in range(20):
            again = await wire.http.post(f"{V3}/fast_execute_script", json=body,
                                         headers=wire.headers())
            assert again.status_code == 503, again.text
            ids.add(again.json()["job_request_id"])
        assert len(ids) == 22, ids
        blobs = small_disk / "blobs"
        assert not blobs.exists() or not list(blobs.iterdir())
        # reads need no disk: the status and the logs of what ran before
        assert (await wire.status(done["job_instance_id"]))["finished"]
        step = before["step_instance_list"][0]["step_instance_id"]
        assert await wire.logs(done["job_instance_id"], step, IPS) == {
            ip: "before\n" for ip in IPS}
        # the probe says so (the node still serves what needs no disk: degraded)
        async def disk_full() -> dict[str, object] | None:
            probe = await wire.http.get("/readyz")
            body = dict(probe.json())
            return body if probe.status_code == 200 and body["status"] == "degraded" else None
        probe = await eventually(disk_full, timeout=10, interval=0.5)
        assert probe["checks"]["disk"] == {"ok": False, "error": "full", "free_bytes": 0}
        assert str(small_disk) not in str(probe)
        failed = [r.getMessage() for r in caplog.records if r.exc_info is not None]
        assert not [m for m in failed if m.startswith("request_failed")], failed
        told = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                and r.getMessage().startswith("request_disk_refused")]
        logged = {r.getMessage().split("request_id=")[1] for r in caplog.records
                  if r.getMessage().startswith("request_disk_refused")}
        assert logged == ids, (logged, ids)
        # the first refusal, with its id; the others are counted in a line a minute
        assert len(told) == 1 and "reason=ENOSPC" in told[0], told
        assert told[0].startswith(f"request_disk_refused path={V3}/fast_execute_script "), told
        assert told[0].split("request_id=")[1] == refused["job_request_id"], told
        await asyncio.to_thread(free, small_disk)
        async def ready() -> bool:
            return bool((await wire.http.get("/readyz")).json()["status"] == "ready")
        await eventually(ready, timeout=10, interval=0.5)
        # space is back: the same server takes work again, no restart
        again = await wire.run_script("echo after", IPS)
        assert (await wire.wait(again["job_instance_id"]))["job_instance"]["status"] == 3
        stored = await wire.http.post("/api/jobfleet/v1/files",
                                      params={"name": "big.bin", "bk_biz_id": 2},
                                      content=b"x" * (1 << 20), headers=wire.headers())
        assert stored.json()["result"], stored.text


async def test_a_file_the_full_blob_store_cannot_take_fails_its_hosts_clearly(
        tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the source agent retries a refused upload for a minute, in case space comes back
    monkeypatch.setattr("jobfleet.agent.transfers.RETRY_FOR", 2.0)
    work = tmp_path / "work"
    work.mkdir()
    content = os.urandom(3 << 20)
    (work / "src.bin").write_bytes(content)

    async def send(run: Running, target: str) -> dict[str, object]:
        started = await run.wire.v3("fast_transfer_file", {
            "bk_scope_type": "biz", "bk_scope_id": "2", "bk_biz_id": 2,
            "account_alias": "root", "file_target_path": target,
            "file_source_list": [{"file_list": [str(work / "src.bin")],
                                  "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]},
                                  "account": {"alias": "root"}, "file_type": 1}],
            "target_server": {"ip_list": [{"ip": IPS[1], "bk_cloud_id": 0}]}})
        assert started["result"], started
        return dict(started["data"])

    async with run_server(tmp_path, f"sqlite+aiosqlite:///{small_disk}/jobfleet.db") as run:
        await run.start_agents(IPS)
        wire = run.wire
        # room for the database's writes, not for the file
        await asyncio.to_thread(fill, small_disk, 700 << 10)
        job = await send(run, str(work / "full"))
        status = await wire.wait(int(str(job["job_instance_id"])), timeout=60)
        assert status["job_instance"]["status"] == 4, status
        answer = await wire.v3("get_job_instance_ip_log", {
            "bk_biz_id": 2, "job_instance_id": job["job_instance_id"],
            "step_instance_id": job["step_instance_id"], "ip": IPS[1], "bk_cloud_id": 0},
            method="GET")
        told = " ".join(f["log_content"] for f in answer["data"]["file_logs"])
        assert "cannot write to its disk" in told, told
        assert "HTTP 500" not in told, told
        # nothing half-written kept, on the server or on the target
        blobs = small_disk / "blobs"
        leftovers = list(blobs.iterdir()) if blobs.exists() else []
        assert not leftovers, leftovers
        assert not (work / "full").exists() or not list((work / "full").iterdir())
        await asyncio.to_thread(free, small_disk)
        job = await send(run, str(work / "freed"))
        status = await wire.wait(int(str(job["job_instance_id"])), timeout=60)
        assert status["job_instance"]["status"] == 3, status
        assert (work / "freed" / "src.bin").read_bytes() == content


async def test_an_agent_whose_disk_is_full_fails_what_it_cannot_write_and_goes_on(
        tmp_path: Path, database_url: str) -> None:
    """The agent's state directory (its spool, its work directory) and the target of a
    file on its own full disk."""
    with tmpfs(tmp_path / f"agent-{IPS[1]}", "4m") as agent_disk:
        async with run_server(tmp_path, database_url) as run:
            await run.start_agents(IPS)
            wire = run.wire
            content = os.urandom(1 << 20)
            uploaded = await wire.http.post("/api/jobfleet/v1/files",
                                            params={"name": "one.bin", "bk_biz_id": 2},
                                            content=content, headers=wire.headers())
            path = uploaded.json()["data"]["path"]

            async def send(target: Path) -> dict[str, object]:
                started = await wire.v3("fast_transfer_file", {
                    "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(target),
                    "file_source_list": [{"file_list": [path], "file_type": 2}],
                    "target_server": {"ip_list": [{"ip": IPS[1], "bk_cloud_id": 0}]}})
                assert started["result"], started
                return await wire.wait(int(started["data"]["job_instance_id"]), timeout=60)

            # room for part of the file only
            await asyncio.to_thread(fill, agent_disk, 256 << 10)
            status = await send(agent_disk / "full")
            assert status["job_instance"]["status"] == 4, status
            answer = await wire.v3("get_job_instance_ip_log", {
                "bk_biz_id": 2, "job_instance_id": status["job_instance"]["job_instance_id"],
                "step_instance_id": status["step_instance_list"][0]["step_instance_id"],
                "ip": IPS[1], "bk_cloud_id": 0}, method="GET")
            told = " ".join(f["log_content"] for f in answer["data"]["file_logs"])
            assert "No space left on device" in told, told
            full = agent_disk / "full"
            assert not full.exists() or not list(full.iterdir()), list(full.iterdir())
            # scripts still run there, and their results arrive though its spool is full
            job = await wire.run_script("echo still here", IPS)
            status = await wire.wait(job["job_instance_id"])
            assert status["job_instance"]["status"] == 3, status
            logs = await wire.logs(job["job_instance_id"],
                                   status["step_instance_list"][0]["step_instance_id"], IPS)
            assert logs == {ip: "still here\n" for ip in IPS}
            await asyncio.to_thread(free, agent_disk)
            status = await send(agent_disk / "freed")
            assert status["job_instance"]["status"] == 3, status
            assert (agent_disk / "freed" / "one.bin").read_bytes() == content


async def test_a_server_started_on_a_full_disk_says_so_in_one_line_and_ends(
        tmp_path: Path, small_disk: Path) -> None:
    """An operator's first move, a restart, on a disk already full: no half-minute of
    retries ending in a traceback, but the path, the reason and the status of a refused
    start (2)."""
    async with run_server(tmp_path, f"sqlite+aiosqlite:///{small_disk}/jobfleet.db"):
        pass
    await all_closed(small_disk / "jobfleet.db")
    await asyncio.to_thread(fill, small_disk)
    # what starting the program costs on this machine now, measured in the same run: a
    # loaded CI machine has taken 20 s to start it, so a fixed bound tells nothing
    begun = time.monotonic()
    baseline = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import jobfleet.cli.main, jobfleet.server")
    assert await baseline.wait() == 0
    start_cost = time.monotonic() - begun
    server = Proc(["jobfleet", "server", "--data-dir", str(small_disk),
                   "--port", str(free_port()), "--log-level", "warning"], {})
    begun = time.monotonic()
    await server.start()
    code, text = await server.ended(180)
    took = time.monotonic() - begun
    assert code == 2, text
    # the database is retried 30 times a second apart when it does not answer: a refusing
    # disk must end the start at once, well before those 29 s of waiting
    assert took < start_cost + 15, (took, start_cost)
    assert "Traceback" not in text, text
    refused = [line for line in text.splitlines() if "database_disk_refused" in line]
    assert len(refused) == 1, text
    assert f"path={small_disk / 'jobfleet.db'} reason=ENOSPC" in refused[0], refused


async def test_a_server_stopped_on_a_full_disk_says_what_it_could_not_save_in_a_line(
        tmp_path: Path, small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its agents leave as it stops: that they left cannot be written. One line says so
    and what becomes of it (the next start marks them offline), not a traceback."""
    caplog.set_level(logging.INFO)
    async with run_server(tmp_path, f"sqlite+aiosqlite:///{small_disk}/jobfleet.db") as run:
        await run.start_agents(IPS)
        await asyncio.to_thread(fill, small_disk)
    stops = [r for r in caplog.records if r.getMessage().startswith("stop_")]
    assert not [r for r in stops if r.exc_info], [r.getMessage() for r in stops]
    presence = [r.getMessage() for r in stops if "part=presence" in r.getMessage()]
    assert len(presence) == 1, [r.getMessage() for r in stops]
    assert presence[0].startswith("stop_unsaved part=presence reason=ENOSPC unsaved="), presence
    assert "offline at its next start" in presence[0], presence
    await asyncio.to_thread(free, small_disk)
    async with run_server(tmp_path, f"sqlite+aiosqlite:///{small_disk}/jobfleet.db") as run:
        # the next start: no agent of before is taken for connected
        hosts = await run.server.inventory.list()
        assert {h.ip for h in hosts} >= set(IPS) and not [h for h in hosts if h.alive], hosts
