"""fast_transfer_file, push_config_file, uploads and fetch, through real agents."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tests.integration.harness import Running, b64

SOURCES = ["127.0.0.2", "127.0.0.3"]
TARGETS = ["127.0.0.4", "127.0.0.5"]


def make_tree(root: Path) -> None:
    (root / "conf" / "sub").mkdir(parents=True)
    (root / "conf" / "empty").mkdir()
    (root / "conf" / "a.conf").write_text("alpha\n")
    (root / "conf" / "sub" / "b.conf").write_text("beta\n")
    os.chmod(root / "conf" / "sub" / "b.conf", 0o640)
    for name in ("x.log", "y.log", "z.txt"):
        (root / name).write_text(f"{name}\n")


def transfer_body(files: list[str], sources: list[str], targets: list[str], target: str,
                  **extra: Any) -> dict[str, Any]:
    return {"bk_biz_id": 2, "account_alias": "root", "file_target_path": target,
            "file_source_list": [{"file_list": files, "account": {"alias": "root"},
                                  "server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0}
                                                         for ip in sources]}}],
            "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in targets]},
            **extra}


async def run_transfer(running: Running, body: dict[str, Any], *,
                       timeout: float = 120) -> tuple[dict[str, Any], dict[str, Any]]:
    answer = await running.wire.v3("fast_transfer_file", body)
    assert answer["result"], answer
    data = await running.wire.wait(answer["data"]["job_instance_id"], timeout=timeout)
    return answer["data"], data


async def test_tree_and_wildcard_to_many_targets_with_filesrcip(running: Running,
                                                                tmp_path: Path) -> None:
    await running.start_agents(SOURCES + TARGETS)
    src = tmp_path / "src"
    make_tree(src)
    dest = tmp_path / "dest"
    sub, data = await run_transfer(running, transfer_body(
        [f"{src}/conf", f"{src}/*.log"], SOURCES, TARGETS, f"{dest}/[FILESRCIP]/"))
    assert data["job_instance"]["status"] == 3, data
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert {r["ip"] for r in results} == set(TARGETS) and {r["status"] for r in results} == {9}
    assert data["step_instance_list"][0]["type"] == 2
    for source in SOURCES:
        base = dest / f"0_{source}"
        assert (base / "conf" / "a.conf").read_text() == "alpha\n"
        assert (base / "conf" / "sub" / "b.conf").read_text() == "beta\n"
        assert oct((base / "conf" / "sub" / "b.conf").stat().st_mode & 0o777) == "0o640"
        assert (base / "conf" / "empty").is_dir()
        assert (base / "x.log").read_text() == "x.log\n" and not (base / "z.txt").exists()
    logs = await running.wire.v3("batch_get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"],
        "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in TARGETS + SOURCES[:1]]})
    assert logs["data"]["log_type"] == 2
    by_ip = {item["ip"]: item["file_logs"] for item in logs["data"]["file_task_logs"]}
    downloads = by_ip[TARGETS[0]]
    assert {d["mode"] for d in downloads} == {1} and {d["status"] for d in downloads} == {4}
    assert any(d["dest_path"] == f"{dest}/0_{SOURCES[1]}/x.log" and d["process"] == "100%"
               for d in downloads)
    uploads = by_ip[SOURCES[0]]
    assert uploads and {u["mode"] for u in uploads} == {0} and {u["status"] for u in uploads} == {4}
    single = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"], "bk_cloud_id": 0, "ip": TARGETS[1]},
        method="GET")
    assert single["data"]["log_type"] == 2
    # as bk-job: the host's downloads, then the uploads of every source
    modes = [f["mode"] for f in single["data"]["file_logs"]]
    assert modes == [1] * len(downloads) + [0] * (len(modes) - len(downloads))
    assert modes.count(0) == 2 * len(uploads)


async def test_missing_source_fails_targets_with_203(running: Running, tmp_path: Path) -> None:
    await running.start_agents(SOURCES[:1] + TARGETS[:1])
    _sub, data = await run_transfer(running, transfer_body(
        [f"{tmp_path}/nope.txt"], SOURCES[:1], TARGETS[:1], f"{tmp_path}/d/"))
    assert data["job_instance"]["status"] == 4
    assert data["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 203
    logs = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": _sub["job_instance_id"],
        "step_instance_id": _sub["step_instance_id"], "bk_cloud_id": 0, "ip": TARGETS[0]},
        method="GET")
    failure = logs["data"]["file_logs"][-1]
    assert failure["status"] == 5 and "nope.txt" in failure["log_content"]


async def test_strict_mode_needs_the_target_dir_force_creates_it(running: Running,
                                                                 tmp_path: Path) -> None:
    await running.start_agents(SOURCES[:1] + TARGETS[:1])
    (tmp_path / "f.txt").write_text("content\n")
    _sub, strict = await run_transfer(running, transfer_body(
        [f"{tmp_path}/f.txt"], SOURCES[:1], TARGETS[:1], f"{tmp_path}/absent/", transfer_mode=1))
    assert strict["step_instance_list"][0]["step_ip_result_list"][0]["status"] == 202
    assert not (tmp_path / "absent").exists()
    _sub, force = await run_transfer(running, transfer_body(
        [f"{tmp_path}/f.txt"], SOURCES[:1], TARGETS[:1], f"{tmp_path}/absent/", transfer_mode=2))
    assert force["job_instance"]["status"] == 3
    assert (tmp_path / "absent" / "f.txt").read_text() == "content\n"


async def test_push_config_file_and_uploaded_sources(running: Running, tmp_path: Path) -> None:
    await running.start_agents(TARGETS)
    answer = await running.wire.v3("push_config_file", {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{tmp_path}/etc",
        "file_list": [{"file_name": "app.ini", "content": b64("[main]\nport=80\n")}],
        "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in TARGETS]}})
    assert answer["result"], answer
    data = await running.wire.wait(answer["data"]["job_instance_id"])
    assert data["job_instance"]["status"] == 3
    assert (tmp_path / "etc" / "app.ini").read_text() == "[main]\nport=80\n"
    payload = os.urandom(200_000)
    upload = (await running.wire.http.post(
        "/api/jobfleet/v1/files", params={"name": "pkg.bin", "bk_biz_id": 2}, content=payload,
        headers=running.wire.headers())).json()["data"]
    _sub, data = await run_transfer(running, {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{tmp_path}/pkg/[FILESRCIP]",
        "file_source_list": [{"file_list": [upload["path"]], "file_type": 2}],
        "target_server": {"ip_list": [{"ip": TARGETS[0], "bk_cloud_id": 0}]}})
    assert data["job_instance"]["status"] == 3, data
    assert (tmp_path / "pkg" / "0_0.0.0.0" / "pkg.bin").read_bytes() == payload


async def test_fetch_brings_files_back_per_host(running: Running, tmp_path: Path) -> None:
    await running.start_agents(SOURCES)
    log = tmp_path / "app.log"
    log.write_text("line\n")
    answer = await running.wire.post("/api/jobfleet/v1/fetch", {
        "bk_biz_id": 2, "account_alias": "root", "file_list": [str(log)],
        "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in SOURCES]}})
    assert answer["result"], answer
    job_id = answer["data"]["job_instance_id"]
    data = await running.wire.wait(job_id)
    assert data["job_instance"]["status"] == 3, data
    listing = await running.wire.get(f"/api/jobfleet/v1/fetch/{job_id}", {"bk_biz_id": 2})
    files = listing["data"]
    assert {f["ip"] for f in files} == set(SOURCES)
    for item in files:
        resp = await running.wire.http.get(f"/api/jobfleet/v1/files/{item['file_id']}",
                                           headers=running.wire.headers())
        assert resp.content == b"line\n"
        assert item["sha256"] == hashlib.sha256(b"line\n").hexdigest()
        # the same file in the server's folder per host
        assert item["url"] == f"/api/jobfleet/v1/fetch/{job_id}/0_{item['ip']}{log}"
        by_path = await running.wire.http.get(item["url"], headers=running.wire.headers())
        assert by_path.content == b"line\n"
    missing = await running.wire.http.get(f"/api/jobfleet/v1/fetch/{job_id}/0_127.0.0.9{log}",
                                          headers=running.wire.headers())
    assert missing.status_code == 404 and missing.json()["result"] is False
