"""Target paths and names longer than a file system (and a file log) takes: refused at
the API when given, failing the step's hosts when variables make them so."""

from __future__ import annotations

from pathlib import Path

from tests.integration.harness import Running, b64
from tests.integration.test_file_transfer import run_transfer, transfer_body
from tests.integration.test_templates import own

SOURCE = "127.0.0.2"
TARGET = "127.0.0.4"


async def test_a_path_or_a_name_too_long_for_any_file_system_is_refused(
        running: Running, tmp_path: Path) -> None:
    long_dir = "/" + "d" * 4096 + "/"
    answer = await running.wire.v3("fast_transfer_file", transfer_body(
        [f"{tmp_path}/f.txt"], [SOURCE], [TARGET], long_dir))
    assert not answer["result"] and answer["code"] == 1241010, answer
    assert "file_target_path" in answer["message"] and "4096" in answer["message"]
    answer = await running.wire.v3("fast_transfer_file", transfer_body(
        ["/" + "s" * 4096], [SOURCE], [TARGET], f"{tmp_path}/d/"))
    assert not answer["result"] and answer["code"] == 1241010, answer
    for name in ("n" * 256, "n" * 1100):
        answer = await running.wire.v3("push_config_file", {
            "bk_biz_id": 2, "account_alias": "root", "file_target_path": f"{tmp_path}/cfg/",
            "file_list": [{"file_name": name, "content": b64("x")}],
            "target_server": {"ip_list": [{"ip": TARGET, "bk_cloud_id": 0}]}})
        assert not answer["result"] and answer["code"] == 1241010, answer
        assert "file_list.file_name" in answer["message"], answer
    answer = await own(running, "POST", "/templates", {"name": "ship", "step_list": [
        {"name": "ship", "type": 2, "file_info": {
            "file_source_list": [{"file_list": ["/srv/f.txt"], "account": {"alias": "root"},
                                  "server": {"ip_list": [{"ip": SOURCE, "bk_cloud_id": 0}]}}],
            "file_destination": {"path": long_dir, "account": {"alias": "root"},
                                 "server": {"ip_list": [{"ip": TARGET, "bk_cloud_id": 0}]}}}}]})
    assert not answer["result"] and answer["code"] == 1241010, answer
    assert "file_destination.path" in answer["message"], answer


async def test_a_target_path_its_variables_make_too_long_fails_the_hosts(
        running: Running, tmp_path: Path) -> None:
    await running.start_agents([SOURCE, TARGET])
    (tmp_path / "f.txt").write_text("f\n")
    # short as written, 4 * 1100 characters once the date is filled in
    target = f"{tmp_path}/[DATEFMT:{'%Y' * 1100}]/"
    sub, data = await run_transfer(running, transfer_body(
        [f"{tmp_path}/f.txt"], [SOURCE], [TARGET], target, timeout=30), timeout=60)
    assert data["job_instance"]["status"] == 4, data
    result = data["step_instance_list"][0]["step_ip_result_list"][0]
    assert result["ip"] == TARGET and result["status"] == 202, result
    logs = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"], "bk_cloud_id": 0, "ip": TARGET},
        method="GET")
    assert "longer than 4096 characters" in str(logs["data"]["file_logs"]), logs
