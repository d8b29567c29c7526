"""The audit log (refusals, downloads, administration, cron firings) and the purge of
old history, on a real server with real agents."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from tests.integration.harness import Running, Wire, eventually, run_server
from tests.integration.test_cron import FAST, make_plan, saved, set_status

from jobfleet.engine.retention import Retention, RetentionSettings
from jobfleet.store.audit import MAX_DETAIL, AuditQuery
from jobfleet.store.database import now_ms
from jobfleet.store.retention import RetentionStore
from jobfleet.store.tables import (
    audit_log,
    blobs,
    job_instances,
    job_plans,
    log_chunks,
    step_hosts,
    step_instances,
)

ADMIN = "/api/jobfleet/v1"
V3 = "/api/bk-job/prod/api/v3"
A = "127.0.0.2"


async def admin(wire: Wire, method: str, path: str, body: Any = None) -> dict[str, Any]:
    resp = await wire.http.request(method, ADMIN + path, json=body, headers=wire.headers())
    return dict(resp.json())


def listing(biz: int = 2) -> dict[str, Any]:
    return {"bk_biz_id": biz, "create_time_start": now_ms() - 60_000,
            "create_time_end": now_ms() + 60_000}


async def entries(running: Running, **query: Any) -> list[dict[str, Any]]:
    _total, rows = await running.server.services.audit.query(AuditQuery(**query), limit=1000)
    return rows


async def upload(wire: Wire, name: str, payload: bytes) -> dict[str, Any]:
    resp = await wire.http.post(f"{ADMIN}/files", params={"name": name, "bk_biz_id": 2},
                                content=payload, headers=wire.headers())
    assert resp.json()["result"], resp.text
    return dict(resp.json()["data"])


async def test_refusals_are_audited_once_per_address_and_reason(
    tmp_path: Path, database_url: str
) -> None:
    # a bad agent credential is tried on the API port, where plain-text agents are allowed
    async with run_server(tmp_path, database_url, server={"agent_plaintext": True}) as running:
        await _refusals_audited(running)


async def _refusals_audited(running: Running) -> None:
    wire = running.wire
    path = f"{V3}/get_job_instance_list"
    answers = await asyncio.gather(*[
        wire.http.get(path, params=listing(), headers=wire.headers(bk_app_secret="wrong"))
        for _ in range(40)])
    assert {a.json()["code"] for a in answers} == {1240005}
    refused = await entries(running, action="refused", resource_id="bad_credentials")
    # one row per address, reason and minute: a flood is counted, not written row by row
    assert 1 <= len(refused) <= 2, refused
    assert sum(r["detail"]["count"] for r in refused) == 40
    assert {r["source_ip"] for r in refused} == {"127.0.0.1"}
    assert refused[0]["detail"]["path"] == path
    # an agent's bad credential on the file routes too
    bad_agent = await wire.http.get(f"{ADMIN}/agents/blobs/abc",
                                    headers={"Authorization": "Agent nobody:nothing"})
    assert bad_agent.status_code == 401
    # (same address, same reason, same minute: counted on the same entry)
    again = await entries(running, action="refused", resource_id="bad_credentials")
    assert sum(r["detail"]["count"] for r in again) == 41 and len(again) <= 2
    # a scope denial names who was refused
    await admin(wire, "POST", "/users", {"username": "bob"})
    bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "bob")
    try:
        denied = await bob.v3("get_job_instance_list", listing(), method="GET")
        assert denied["code"] == 9900403
    finally:
        await bob.close()
    (entry,) = await entries(running, action="refused", resource_id="permission_denied")
    assert (entry["username"], entry["source_ip"], entry["detail"]["count"]) == (
        "bob", "127.0.0.1", 1)


async def test_downloads_and_administration_are_audited(running: Running, tmp_path: Path) -> None:
    wire = running.wire
    await running.start_agents([A])
    payload = b"secret build\n"
    file_id = (await upload(wire, "build.bin", payload))["path"].split("/")[0]
    got = await wire.http.get(f"{ADMIN}/files/{file_id}", headers=wire.headers())
    assert got.content == payload
    (download,) = await entries(running, action="download_file")
    assert (download["resource_id"], download["source_ip"], download["username"]) == (
        file_id, "127.0.0.1", "admin")
    log = tmp_path / "app.log"
    log.write_text("line\n")
    fetch = await wire.post(f"{ADMIN}/fetch", {
        "bk_biz_id": 2, "account_alias": "root", "file_list": [str(log)],
        "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}})
    job_id = fetch["data"]["job_instance_id"]
    await wire.wait(job_id)
    (item,) = (await wire.get(f"{ADMIN}/fetch/{job_id}", {"bk_biz_id": 2}))["data"]
    assert (await wire.http.get(item["url"], headers=wire.headers())).content == b"line\n"
    (fetched,) = await entries(running, action="download_fetched_file")
    assert fetched["resource_id"] == str(job_id) and fetched["detail"]["path"] == str(log)

    # administration actions by name, with their resource, never with a secret
    made = await admin(wire, "POST", "/apps", {"app_code": "ci", "description": "CI"})
    await admin(wire, "POST", "/users", {"username": "carol", "junk": "x" * 100_000})
    await admin(wire, "POST", "/users/carol/grants", {"scope_type": "biz", "scope_id": "2"})
    token = (await admin(wire, "POST", "/enroll-tokens", {"uses": 1, "note": "one"}))["data"]
    agent_id = next(h.agent_id for h in await running.server.inventory.list() if h.ip == A)
    assert (await admin(wire, "DELETE", f"/agents/{agent_id}"))["result"]
    by_action = {e["action"]: e for e in await entries(running, username="admin")}
    assert by_action["create_app"]["resource_type"] == "app"
    assert by_action["create_app"]["resource_id"] == "ci"
    assert by_action["create_user"]["resource_id"] == "carol"
    assert by_action["grant_user"]["detail"]["scope_id"] == "2"
    assert by_action["create_token"]["resource_type"] == "enroll_token"
    assert (by_action["revoke_agent"]["resource_type"],
            by_action["revoke_agent"]["resource_id"]) == ("agent", agent_id)
    text = json.dumps(await entries(running))
    assert made["data"]["app_secret"] not in text and token["token"] not in text
    # a detail past the bound is cut, and says so
    detail = by_action["create_user"]["detail"]
    assert detail["truncated"] is True and detail["preview"].endswith("...[truncated]")
    assert len(json.dumps(detail)) <= MAX_DETAIL + 200


async def test_cron_firings_are_audited(tmp_path: Path, database_url: str) -> None:
    async with run_server(tmp_path, database_url, engine=FAST) as running:
        await running.start_agents(["127.0.0.91"])
        server, wire = running.server, running.wire
        plan_id = await make_plan(server.db, server.cipher)
        cron = await saved(wire, name="every minute", job_plan_id=plan_id,
                           expression="* * * * *")
        assert (await set_status(wire, cron["id"], 1))["result"]

        async def fired() -> list[dict[str, Any]]:
            return await entries(running, action="fire_cron")
        (first, *_rest) = await eventually(fired, timeout=15)
        assert (first["resource_type"], first["resource_id"], first["username"]) == (
            "cron_firing", str(cron["id"]), "admin")
        assert (first["scope_type"], first["scope_id"]) == ("biz", "2")
        assert first["detail"]["job_instance_id"] > 0
        await set_status(wire, cron["id"], 2)


class CountingStore(RetentionStore):
    """The real store, noting the size of each batch it was asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batches: list[tuple[str, int]] = []

    async def purge_jobs(self, before_ms: int, limit: int) -> int:
        count = await super().purge_jobs(before_ms, limit)
        self.batches.append(("jobs", count))
        return count


async def test_retention_purges_old_history_and_keeps_what_is_in_use(
        running: Running, tmp_path: Path) -> None:
    wire, server = running.wire, running.server
    await running.start_agents([A])
    finished = []
    for i in range(5):
        job = await wire.run_script(f"echo run {i}", [A])
        await wire.wait(job["job_instance_id"])
        finished.append(job)
    # a job that has not started is live: it and the file it will send are kept
    kept_file = await upload(wire, "kept.bin", b"kept")
    live = await wire.v3("fast_transfer_file", {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(tmp_path / "t"),
        "file_source_list": [{"file_list": [kept_file["path"]], "file_type": 2}],
        "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}, "start_task": False})
    assert live["result"], live
    planned = await upload(wire, "planned.bin", b"planned")
    old = await upload(wire, "old.bin", b"old")
    plan_id = await make_plan(server.db, server.cipher)
    steps_of = [{"file_source_list": [{"file_type": 2, "file_list": [planned["path"]]}]}]
    long_ago = now_ms() - 400 * 86_400_000
    async with server.db.begin() as conn:
        plan_steps = (await conn.execute(select(job_plans.c.steps)
                                         .where(job_plans.c.id == plan_id))).scalar_one()
        await conn.execute(update(job_plans).where(job_plans.c.id == plan_id)
                           .values(steps=[*plan_steps, *steps_of]))
        for table in (job_instances, blobs, audit_log):
            await conn.execute(update(table).values(create_time=long_ago))
        await conn.execute(update(job_instances).where(job_instances.c.status == 3)
                           .values(end_time=long_ago))
    ids = {i: (await upload(wire, f"new{i}.bin", b"new"))["path"] for i in range(1)}
    paths = {name: server.blobs.path(f["path"].split("/")[0])
             for name, f in (("kept", kept_file), ("planned", planned), ("old", old))}
    assert all(p.exists() for p in paths.values())

    store = CountingStore(server.db, server.blobs.root)
    days = 86_400.0
    retention = Retention(store, RetentionSettings(jobs=90 * days, audit=365 * days,
                                                   blobs=30 * days, batch=2, pause=0.0))
    done = await retention.run_once()
    assert done["jobs"] == 5 and done["blobs"] == 1 and done["audit"] > 0, done
    # batches of at most 2 rows, each its own transaction, until one came back short
    assert store.batches == [("jobs", 2), ("jobs", 2), ("jobs", 1)]
    assert not paths["old"].exists()
    assert paths["kept"].exists() and paths["planned"].exists()
    assert server.blobs.path(ids[0].split("/")[0]).exists()

    gone = await wire.v3("get_job_instance_status", {
        "bk_biz_id": 2, "job_instance_id": finished[0]["job_instance_id"]}, method="GET")
    assert gone["code"] == 1244006 and "purged" in gone["message"], gone
    logs = await wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": finished[0]["job_instance_id"],
        "step_instance_id": finished[0]["step_instance_id"], "ip": A}, method="GET")
    assert logs["code"] == 1244006
    still = await wire.v3("get_job_instance_status", {
        "bk_biz_id": 2, "job_instance_id": live["data"]["job_instance_id"]}, method="GET")
    assert still["result"], still
    steps = [j["step_instance_id"] for j in finished]
    async with server.db.connect() as conn:
        for table in (log_chunks, step_hosts):
            left = (await conn.execute(select(func.count()).select_from(table).where(
                table.c.step_instance_id.in_(steps)))).scalar_one()
            assert left == 0, table.name
        left = (await conn.execute(select(func.count()).select_from(step_instances).where(
            step_instances.c.id.in_(steps)))).scalar_one()
        assert left == 0
        # the entries written since the purge began are younger than the period: kept
        old_audit = (await conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.create_time == long_ago))).scalar_one()
        assert old_audit == 0
    # the purged file is gone for downloads too
    missing = await wire.http.get(f"{ADMIN}/files/{old['path'].split('/')[0]}",
                                  headers=wire.headers())
    assert missing.status_code == 404 and missing.json()["result"] is False
    # nothing left to do: a second pass purges nothing
    assert await retention.run_once() == {"jobs": 0, "procs": 0, "firings": 0, "audit": 0,
                                             "blobs": 0, "heal": 0}


async def test_log_reads_are_audited_once_a_minute_per_reader(running: Running) -> None:
    """Clients poll logs: each reader gets one entry per job a minute, counting its reads."""
    wire = running.wire
    await running.start_agents([A])
    job = await wire.v3("fast_execute_script", {
        "bk_biz_id": 2, "script_language": 1, "account_alias": "root",
        "script_content": "ZWNobyBoZWxsbw==",  # echo hello
        "target_server": {"ip_list": [{"bk_cloud_id": 0, "ip": A}]}})
    job_id = job["data"]["job_instance_id"]
    step_id = job["data"]["step_instance_id"]
    await wire.wait(job_id)
    for _ in range(5):
        await wire.logs(job_id, step_id, [A])
    one = await wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
        "bk_cloud_id": 0, "ip": A}, method="GET")
    assert one["data"]["log_content"] == "hello\n"
    await running.server.services.audit.flush()
    # one entry (two if the reads straddle the turn of a minute) counting all six reads
    found = await entries(running, action="read_logs")
    assert 1 <= len(found) <= 2 and sum(e["detail"]["count"] for e in found) == 6
    for entry in found:
        assert (entry["resource_type"], entry["resource_id"]) == ("job", str(job_id))
        assert (entry["source_ip"], entry["username"], entry["scope_id"]) == (
            "127.0.0.1", "admin", "2")
        assert entry["detail"]["step_instance_id"] == step_id
    # another reader gets an entry of its own
    bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "admin2")
    await admin(wire, "POST", "/users", {"username": "admin2", "is_admin": True})
    try:
        await bob.logs(job_id, step_id, [A])
    finally:
        await bob.http.aclose()
    await running.server.services.audit.flush()
    assert {e["username"] for e in await entries(running, action="read_logs")} == {
        "admin", "admin2"}


class RetryWhilePicking(RetentionStore):
    """The real store; between picking the old finished jobs and deleting them, an
    operator retries one of them (the next statement another connection commits)."""

    def __init__(self, *args: Any, retry: Any) -> None:
        super().__init__(*args)
        self.retry = retry

    async def _old_finished_jobs(self, conn: Any, before_ms: int, limit: int) -> list[int]:
        ids = await super()._old_finished_jobs(conn, before_ms, limit)
        if self.retry is not None:
            retry, self.retry = self.retry, None
            await retry()
        return ids


async def test_retention_keeps_a_job_retried_while_it_was_picked(
        running: Running, tmp_path: Path) -> None:
    wire, server = running.wire, running.server
    await running.start_agents([A])
    marker = tmp_path / "second-run"
    job = await wire.run_script(
        f"if [ -f {marker} ]; then sleep 1; echo second; else touch {marker}; exit 1; fi",
        [A])
    job_id, step_id = job["job_instance_id"], job["step_instance_id"]
    assert (await wire.wait(job_id))["job_instance"]["status"] == 4
    async with server.db.begin() as conn:
        await conn.execute(update(job_instances).where(job_instances.c.id == job_id)
                           .values(create_time=now_ms() - 400 * 86_400_000))

    async def retry() -> None:
        answer = await wire.v3("operate_step_instance", {
            "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
            "operation_code": 8})
        assert answer["result"], answer

    store = RetryWhilePicking(server.db, server.blobs.root, retry=retry)
    await store.purge_jobs(now_ms() - 90 * 86_400_000, 10)
    # the retried job is live again: it, its steps and its hosts are all still there
    data = await wire.wait(job_id)
    assert data["job_instance"]["status"] == 3, data
    assert (await wire.logs(job_id, step_id, [A]))[A] == "second\n"


class SendDuringPass(RetentionStore):
    """The real store; once its first batch of blobs is gone, a client starts a job
    that sends an old upload the pass has not reached yet."""

    def __init__(self, *args: Any, launch: Any) -> None:
        super().__init__(*args)
        self.launch = launch

    async def purge_blobs(self, before_ms: int, limit: int, keep: set[str],
                          after: str) -> tuple[str, int]:
        done = await super().purge_blobs(before_ms, limit, keep, after)
        if self.launch is not None:
            launch, self.launch = self.launch, None
            await launch()
        return done


async def test_retention_keeps_a_file_a_job_started_during_the_pass_sends(
        running: Running, tmp_path: Path) -> None:
    wire, server = running.wire, running.server
    await running.start_agents([A])
    first, second = sorted([await upload(wire, f"old{i}.bin", b"old") for i in range(2)],
                           key=lambda f: str(f["path"]))
    async with server.db.begin() as conn:
        await conn.execute(update(blobs).values(create_time=now_ms() - 400 * 86_400_000))
    started: list[int] = []

    async def launch() -> None:
        answer = await wire.v3("fast_transfer_file", {
            "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(tmp_path / "t"),
            "file_source_list": [{"file_list": [second["path"]], "file_type": 2}],
            "target_server": {"ip_list": [{"ip": A, "bk_cloud_id": 0}]}, "start_task": False})
        assert answer["result"], answer
        started.append(answer["data"]["job_instance_id"])

    store = SendDuringPass(server.db, server.blobs.root, launch=launch)
    retention = Retention(store, RetentionSettings(jobs=0, audit=0, heal=0, blobs=86_400.0,
                                                   batch=1, pause=0.0))
    done = await retention.run_once()
    assert started and done["blobs"] == 1, done
    assert not server.blobs.path(first["path"].split("/")[0]).exists()
    assert server.blobs.path(second["path"].split("/")[0]).exists()
    answer = await wire.v3("operate_job_instance", {
        "bk_biz_id": 2, "job_instance_id": started[0], "operation_code": 2})
    assert answer["result"], answer
    data = await wire.wait(started[0])
    assert data["job_instance"]["status"] == 3, data
    assert (tmp_path / "t" / second["path"].split("/")[1]).read_bytes() == b"old"


async def test_retention_keeps_a_long_job_that_has_only_just_finished(running: Running) -> None:
    """A job is kept for the period after it finished, not after it was created: a job
    that ran for longer than the period stays for its client to read its result."""
    wire, server = running.wire, running.server
    await running.start_agents([A])
    job = await wire.run_script("echo long", [A])
    job_id = job["job_instance_id"]
    await wire.wait(job_id)
    day = 86_400_000
    async with server.db.begin() as conn:
        await conn.execute(update(job_instances).where(job_instances.c.id == job_id)
                           .values(create_time=now_ms() - 100 * day))
    store = RetentionStore(server.db, server.blobs.root)
    assert await store.purge_jobs(now_ms() - 90 * day, 10) == 0
    assert (await wire.logs(job_id, job["step_instance_id"], [A]))[A] == "long\n"
    # once it has been finished for the period too, it goes
    async with server.db.begin() as conn:
        await conn.execute(update(job_instances).where(job_instances.c.id == job_id)
                           .values(end_time=now_ms() - 91 * day))
    assert await store.purge_jobs(now_ms() - 90 * day, 10) == 1


async def test_uploads_are_audited_with_who_and_what(running: Running) -> None:
    """A file put on the server is a change like any other: by the API, by a URL from
    generate_local_file_upload_url (audited under the user who asked for it)."""
    wire = running.wire
    sent = await upload(wire, "build.bin", b"payload")
    urls = await wire.v3("generate_local_file_upload_url",
                         {"bk_biz_id": 2, "file_name_list": ["conf.ini"]})
    assert urls["result"], urls
    target = urls["data"]["url_map"]["conf.ini"]
    put = await wire.http.put(target["upload_url"], content=b"k=v\n")
    assert put.json()["result"], put.text
    await running.server.services.audit.flush()
    asked = await entries(running, action="generate_local_file_upload_url")
    assert [(e["username"], e["scope_id"], e["detail"]["files"]) for e in asked] == [
        ("admin", "2", ["conf.ini"])]
    uploads = {e["resource_id"]: e for e in await entries(running, action="upload_file")}
    by_api, by_url = sent["path"].split("/")[0], target["path"].split("/")[0]
    assert set(uploads) == {by_api, by_url}
    for blob_id, name, size in ((by_api, "build.bin", 7), (by_url, "conf.ini", 4)):
        got = uploads[blob_id]
        assert (got["resource_type"], got["username"], got["scope_type"], got["scope_id"]) == (
            "file", "admin", "biz", "2")
        assert (got["detail"]["name"], got["detail"]["size"]) == (name, size)
        assert got["source_ip"] == "127.0.0.1"
    token = target["upload_url"].split("token=")[1]
    assert token not in json.dumps(await entries(running))
