"""Credentials and third-party file sources (file_type 3) against real servers on loopback:
an HTTP artifact server that wants a password, and an S3 server (moto) that checks
SigV4 signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from bkapi_component.open.client import Client
from sqlalchemy import select
from tests.integration.harness import Running, free_port, run_server

from jobfleet.store.tables import credentials

IPS = ["127.0.0.2", "127.0.0.3"]
LOOPBACK = {"callback_allow": ["127.0.0.0/8"]}
SECRET = "artifact-pa55-kept-sealed"
TOKEN = "bkrepo-token-kept-sealed"
FILES = {"/repo/app/app.conf": b"port = 8080\n", "/repo/app/run.sh": b"echo run\n",
         "/generic/proj/generic-local/v1/tool.sh": b"echo tool\n"}
# a file sent slowly: 64 KiB every tenth of a second
SLOW_PATH, SLOW_CHUNK, SLOW_CHUNKS = "/repo/app/slow.bin", 65536, 300


class Artifacts(BaseHTTPRequestHandler):
    """An artifact server: GET under /repo with basic authentication (user ``ci``), and
    bk-repo's generic download path with a bearer token too."""

    def do_GET(self) -> None:
        basic = "Basic " + base64.b64encode(f"ci:{SECRET}".encode()).decode()
        allowed = {basic, f"Bearer {TOKEN}"} if self.path.startswith("/generic/") else {basic}
        if self.headers.get("Authorization") not in allowed:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="artifacts"')
            self.end_headers()
            return
        if self.path == SLOW_PATH:
            self.send_response(200)
            self.send_header("Content-Length", str(SLOW_CHUNK * SLOW_CHUNKS))
            self.end_headers()
            try:
                for _ in range(SLOW_CHUNKS):
                    self.wfile.write(b"x" * SLOW_CHUNK)
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            return
        body = FILES.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def artifact_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Artifacts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, str]]:
    """moto in server mode, enforcing IAM: an access key with S3 rights and a bucket."""
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto is None:
        pytest.skip("moto[server] is not installed")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # wait for the port without a request: the first three requests go unchecked
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="jobfleet")
        key = iam.create_access_key(UserName="jobfleet")["AccessKey"]
        iam.put_user_policy(UserName="jobfleet", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"],
                          aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="releases")
        s3.put_object(Bucket="releases", Key="v1/payload.bin", Body=b"s3 bytes\n")
        yield {"endpoint": endpoint, "access": key["AccessKeyId"],
               "secret": key["SecretAccessKey"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ip_logs(running: Running, status: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Each target's file log rows, through batch_get_job_instance_ip_log."""
    data = status["data"]
    logs = _client(running).jobv3.batch_get_job_instance_ip_log({
        "bk_biz_id": 2, "job_instance_id": data["job_instance"]["job_instance_id"],
        "step_instance_id": data["step_instance_list"][0]["step_instance_id"],
        "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]})
    assert logs["result"], logs
    return {item["ip"]: item["file_logs"] for item in logs["data"]["file_task_logs"]}


def _client(running: Running) -> Client:
    client = Client(endpoint=running.url, bk_api_ver="v2")
    client.update_bkapi_authorization(bk_app_code=running.boot["bk_app_code"],
                                      bk_app_secret=running.boot["bk_app_secret"],
                                      bk_username="admin")
    return client


def transfer(running: Running, source: dict[str, Any], files: list[str],
             target: str) -> dict[str, Any]:
    """fast_transfer_file of third-party files through the published client."""
    client = _client(running)
    sub = client.jobv3.fast_transfer_file({
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": target,
        "file_source_list": [{"file_type": 3, "file_list": files, **source}],
        "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}})
    if not sub["result"]:
        return sub
    for _ in range(300):
        status = client.jobv3.get_job_instance_status(
            {"bk_biz_id": 2, "job_instance_id": sub["data"]["job_instance_id"],
             "return_ip_result": True})
        if status["data"]["finished"]:
            break
        time.sleep(0.1)
    return dict(status)


async def test_credentials_and_file_sources(tmp_path: Path, database_url: str,
                                           artifact_server: str,
                                           s3_server: dict[str, str]) -> None:
    async with run_server(tmp_path, database_url, server=LOOPBACK) as running:
        await running.start_agents(IPS)
        wire = running.wire
        # credentials: made, changed, shown without their values, sealed at rest
        made = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "artifacts", "type": "USERNAME_PASSWORD",
            "credential_username": "ci", "credential_password": "wrong-at-first"})
        assert made["result"], made
        cred_id = made["data"]["id"]
        assert made["data"] == {"id": cred_id, "name": "artifacts"}
        changed = await wire.v3("update_credential", {
            "bk_biz_id": 2, "id": cred_id, "type": "USERNAME_PASSWORD",
            "credential_username": "ci", "credential_password": SECRET,
            "description": "CI artifacts"})
        assert changed["result"], changed
        detail = await wire.v3("get_credential_detail", {"bk_biz_id": 2, "id": cred_id},
                               method="GET")
        assert detail["result"], detail
        assert detail["data"]["type"] == "USERNAME_PASSWORD"
        assert detail["data"]["description"] == "CI artifacts"
        assert detail["data"]["bk_scope_id"] == "2"
        assert SECRET not in json.dumps(detail) and "credential_password" not in detail["data"]
        async with running.server.db.connect() as conn:
            sealed = (await conn.execute(select(credentials.c.secret))).scalars().all()
        assert all(s.startswith("enc:v1:") and SECRET not in s for s in sealed)
        s3_cred = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "s3", "type": "APP_ID_SECRET_KEY",
            "credential_access_key": s3_server["access"],
            "credential_secret_key": s3_server["secret"]})
        assert s3_cred["result"], s3_cred
        # file sources of both kinds
        http_src = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "artifacts", "alias": "CI artifacts", "type": "HTTP",
            "access_params": {"base_url": artifact_server}, "credential_id": cred_id,
            "file_prefix": "repo/"})
        assert http_src["result"], http_src
        s3_src = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "releases", "alias": "releases", "type": "S3",
            "access_params": {"endpoint_url": s3_server["endpoint"]},
            "credential_id": s3_cred["data"]["id"]})
        assert s3_src["result"], s3_src
        shown = await wire.v3("get_file_source_detail", {"bk_biz_id": 2, "code": "artifacts"},
                              method="GET")
        assert shown["data"]["id"] == http_src["data"]["id"]
        assert shown["data"]["file_source_type_code"] == "HTTP"
        assert shown["data"]["credential_id"] == cred_id and shown["data"]["enable"] is True
        renamed = await wire.v3("update_file_source", {
            "bk_biz_id": 2, "code": "artifacts", "alias": "artifacts (ci)", "type": "HTTP",
            "access_params": {"base_url": artifact_server}, "credential_id": cred_id,
            "file_prefix": "repo/"})
        assert renamed["data"] == {"id": http_src["data"]["id"]}

        # distribution from each source to both hosts
        dest = tmp_path / "dest"
        out = await asyncio.to_thread(transfer, running, {"file_source_code": "artifacts"},
                                      ["app/app.conf", "app/run.sh"], str(dest / "http"))
        assert out["data"]["job_instance"]["status"] == 3, out
        assert (dest / "http" / "app.conf").read_bytes() == FILES["/repo/app/app.conf"]
        assert (dest / "http" / "run.sh").read_bytes() == FILES["/repo/app/run.sh"]
        out = await asyncio.to_thread(
            transfer, running, {"file_source_id": s3_src["data"]["id"]},
            ["releases/v1/payload.bin"], str(dest / "s3"))
        assert out["data"]["job_instance"]["status"] == 3, out
        assert (dest / "s3" / "payload.bin").read_bytes() == b"s3 bytes\n"

        # each target's file log shows the download, by the source's name, then the copy
        logs = await asyncio.to_thread(ip_logs, running, out)
        for ip in IPS:
            rows = logs[ip]
            pulled = [r for r in rows if r["mode"] == 0]
            assert [(r["src_path"], r["status"], r["process"]) for r in pulled] == [
                ("releases/v1/payload.bin", 4, "100%")], rows
            assert "releases (releases)" in pulled[0]["log_content"], pulled
            assert [r["status"] for r in rows if r["mode"] == 1] == [4], rows

        # what goes wrong is said in the step: the job is made, the download fails it
        missing = await asyncio.to_thread(transfer, running, {"file_source_code": "artifacts"},
                                          ["app/app.conf", "app/nope"], str(dest / "x"))
        assert missing["result"] and missing["data"]["job_instance"]["status"] == 4, missing
        hosts = missing["data"]["step_instance_list"][0]["step_ip_result_list"]
        assert {h["status"] for h in hosts} == {203}, hosts
        logs = await asyncio.to_thread(ip_logs, running, missing)
        failed = [r for r in logs[IPS[0]] if r["mode"] == 0]
        assert [r["status"] for r in failed] == [4, 5], failed
        assert "HTTP 404" in failed[1]["log_content"], failed
        assert "artifacts (ci) (artifacts)" in failed[1]["log_content"], failed
        assert not (dest / "x").exists()
        unknown = await asyncio.to_thread(transfer, running, {"file_source_code": "nope"},
                                          ["a"], str(dest / "x"))
        assert unknown["code"] == 1260012, unknown
        wrong_key = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "bad s3", "type": "APP_ID_SECRET_KEY",
            "credential_access_key": s3_server["access"], "credential_secret_key": "nope"})
        await wire.v3("update_file_source", {
            "bk_biz_id": 2, "code": "releases", "alias": "releases", "type": "S3",
            "access_params": {"endpoint_url": s3_server["endpoint"]},
            "credential_id": wrong_key["data"]["id"]})
        refused = await asyncio.to_thread(transfer, running, {"file_source_code": "releases"},
                                          ["releases/v1/payload.bin"], str(dest / "x"))
        assert refused["data"]["job_instance"]["status"] == 4, refused
        logs = await asyncio.to_thread(ip_logs, running, refused)
        assert "HTTP 403" in logs[IPS[1]][0]["log_content"], logs

        # a plan's file step fetches at launch
        own = "/api/jobfleet/v1"
        tpl = await wire.post(f"{own}/templates?bk_biz_id=2", {
            "name": "ship artifacts", "step_list": [{"name": "ship", "type": 2, "file_info": {
                "file_source_list": [{"file_type": 3, "file_source_code": "artifacts",
                                      "file_list": ["app/app.conf"]}],
                "file_destination": {"path": str(dest / "plan"), "account": "root",
                                     "server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}},
            }}]})
        assert tpl["result"], tpl
        plan = await wire.post(f"{own}/templates/{tpl['data']['id']}/plans?bk_biz_id=2",
                               {"name": "ship now"})
        detail = await wire.v3("get_job_plan_detail", {"bk_biz_id": 2,
                                                      "job_plan_id": plan["data"]["id"]},
                               method="GET")
        source = detail["data"]["step_list"][0]["file_info"]["file_source_list"][0]
        assert source == {"file_list": ["app/app.conf"], "file_type": 3,
                          "file_source_code": "artifacts"}, source
        started = await wire.v3("execute_job_plan", {"bk_biz_id": 2,
                                                     "job_plan_id": plan["data"]["id"]})
        assert started["result"], started
        done = await wire.wait(started["data"]["job_instance_id"])
        assert done["job_instance"]["status"] == 3, done
        assert (dest / "plan" / "app.conf").read_bytes() == FILES["/repo/app/app.conf"]


async def test_bad_credential_and_source_input(running: Running) -> None:
    wire = running.wire
    cases = [
        ("create_credential", {"type": "PASSWORD", "credential_password": "x"}, 1241010),
        ("create_credential", {"name": "n", "type": "TOKEN"}, 1241010),
        ("create_credential", {"name": "n", "type": "PASSWORD"}, 1241004),
        ("update_credential", {"name": "n"}, 1241010),
        ("update_credential", {"id": "f" * 32, "name": "n"}, 1243048),
        ("get_credential_detail", {"id": "nope"}, 1243048),
        ("create_file_source", {"code": "a b", "alias": "x", "type": "HTTP"}, 1241010),
        ("create_file_source", {"code": "c", "alias": "x", "type": "FTP",
                                "credential_id": "x"}, 1241005),
        ("create_file_source", {"code": "c", "alias": "x", "type": "HTTP"}, 1241004),
        ("create_file_source", {"code": "c", "alias": "x", "type": "HTTP",
                                "credential_id": "nope"}, 1243048),
        ("get_file_source_detail", {"code": "nope"}, 1260012),
        ("update_file_source", {"code": "nope", "alias": "x", "type": "HTTP"}, 1260012),
    ]
    for api, body, code in cases:
        answer = await wire.v3(api, {"bk_biz_id": 2, **body})
        assert answer["code"] == code, (api, body, answer)
    cred = await wire.v3("create_credential", {"bk_biz_id": 2, "name": "p", "type": "PASSWORD",
                                               "credential_password": "x"})
    base = {"bk_biz_id": 2, "code": "c", "alias": "x", "credential_id": cred["data"]["id"]}
    for extra, code in (
            ({"type": "S3", "access_params": {"endpoint_url": "http://127.0.0.1:9"}}, 1241010),
            ({"type": "HTTP", "access_params": {}}, 1241004),
            ({"type": "HTTP", "access_params": {"base_url": "ftp://127.0.0.1"}}, 1241010)):
        answer = await wire.v3("create_file_source", {**base, **extra})
        assert answer["code"] == code, (extra, answer)
    ok = await wire.v3("create_file_source", {**base, "type": "HTTP",
                                              "access_params": {"base_url": "http://127.0.0.1:8"}})
    assert ok["result"], ok
    again = await wire.v3("create_file_source", {**base, "type": "HTTP",
                                                 "access_params": {"base_url": "http://127.0.0.1:8"}})
    assert again["code"] == 1260015
    # another business does not see it; loopback is refused without --callback-allow
    other = await wire.v3("get_file_source_detail", {"bk_biz_id": 3, "code": "c"})
    assert other["code"] in (1243049, 1260012, 9900403)
    local = await wire.v3("create_file_source", {**base, "code": "lo", "type": "HTTP",
                                                 "access_params": {"base_url": "http://127.0.0.1:9"}})
    assert local["result"], local
    answer = await wire.v3("fast_transfer_file", {
        "bk_biz_id": 2, "account_alias": "root", "file_target_path": "/tmp/x",
        "file_source_list": [{"file_type": 3, "file_source_code": "lo", "file_list": ["a"]}],
        "target_server": {"ip_list": [{"ip": "127.0.0.2", "bk_cloud_id": 0}]}})
    assert answer["code"] == 1241010 and "not an allowed destination" in answer["message"]


async def test_a_credential_keeps_a_type_its_file_sources_can_use(
        tmp_path: Path, database_url: str) -> None:
    """Changed to a type its S3 source cannot use, a credential left every download from
    that source waiting until the step ended in an abnormal state, with no reason."""
    async with run_server(tmp_path, database_url, server=LOOPBACK) as running:
        wire = running.wire
        cred = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "s3", "type": "APP_ID_SECRET_KEY",
            "credential_access_key": "a", "credential_secret_key": "b"})
        cred_id = cred["data"]["id"]
        made = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "releases", "alias": "releases", "type": "S3",
            "access_params": {"endpoint_url": "http://127.0.0.1:9"}, "credential_id": cred_id})
        assert made["result"], made
        refused = await wire.v3("update_credential", {
            "bk_biz_id": 2, "id": cred_id, "type": "PASSWORD", "credential_password": "x"})
        assert refused["code"] == 1241010, refused
        assert "[releases]" in refused["message"] and "PASSWORD" in refused["message"]
        detail = await wire.v3("get_credential_detail", {"bk_biz_id": 2, "id": cred_id},
                               method="GET")
        assert detail["data"]["type"] == "APP_ID_SECRET_KEY"
        # new values of the same type, and any change of a credential no source uses, go
        kept = await wire.v3("update_credential", {
            "bk_biz_id": 2, "id": cred_id, "type": "APP_ID_SECRET_KEY",
            "credential_access_key": "c", "credential_secret_key": "d"})
        assert kept["result"], kept
        spare = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "spare", "type": "APP_ID_SECRET_KEY",
            "credential_access_key": "a", "credential_secret_key": "b"})
        changed = await wire.v3("update_credential", {
            "bk_biz_id": 2, "id": spare["data"]["id"], "type": "PASSWORD",
            "credential_password": "x"})
        assert changed["result"], changed


async def test_downloads_are_a_phase_of_the_step(tmp_path: Path, database_url: str,
                                                 artifact_server: str,
                                                 s3_server: dict[str, str]) -> None:
    """The job is made at once; the step runs while the server downloads, showing the
    progress in the targets' file logs; terminate stops the download. bk-job's own type
    codes: Tencent Cloud COS (S3 protocol) and BlueKing Artifactory (HTTP)."""
    async with run_server(tmp_path, database_url, server=LOOPBACK) as running:
        await running.start_agents(IPS)
        wire = running.wire
        cred = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "ci", "type": "USERNAME_PASSWORD",
            "credential_username": "ci", "credential_password": SECRET})
        await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "slow", "alias": "slow mirror", "type": "HTTP",
            "access_params": {"base_url": artifact_server}, "credential_id": cred["data"]["id"],
            "file_prefix": "repo/"})
        client = _client(running)
        began = time.monotonic()
        sub = await asyncio.to_thread(client.jobv3.fast_transfer_file, {
            "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(tmp_path / "slow"),
            "file_source_list": [{"file_type": 3, "file_source_code": "slow",
                                  "file_list": ["app/slow.bin"]}],
            "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in IPS]}})
        assert sub["result"], sub
        # the 19 MiB file takes half a minute to send; the job was made before that
        assert time.monotonic() - began < 20
        job_id, step_id = sub["data"]["job_instance_id"], sub["data"]["step_instance_id"]

        def progress() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            status = client.jobv3.get_job_instance_status(
                {"bk_biz_id": 2, "job_instance_id": job_id})
            log = client.jobv3.get_job_instance_ip_log({
                "bk_biz_id": 2, "job_instance_id": job_id, "step_instance_id": step_id,
                "ip": IPS[0], "bk_cloud_id": 0})
            return status["data"], log["data"]["file_logs"]

        seen = None
        for _ in range(300):
            status, rows = await asyncio.to_thread(progress)
            pulling = [r for r in rows if r["mode"] == 0 and r["status"] == 0
                       and r["process"] not in ("0%", "100%")]
            if pulling:
                seen = (status, pulling[0])
                break
            await asyncio.sleep(0.1)
        assert seen is not None, rows
        status, row = seen
        assert status["job_instance"]["status"] == 2
        assert status["step_instance_list"][0]["status"] == 2
        assert row["src_path"] == "app/slow.bin" and "slow mirror (slow)" in row["log_content"]
        stopped = await wire.v3("operate_job_instance", {
            "bk_biz_id": 2, "job_instance_id": job_id, "operation_code": 1})
        assert stopped["result"], stopped
        done = await wire.wait(job_id, timeout=60)
        assert done["job_instance"]["status"] == 11, done
        assert {h["status"] for h in done["step_instance_list"][0]["step_ip_result_list"]} \
            == {403}, done
        status, rows = await asyncio.to_thread(progress)
        ended = [r for r in rows if r["mode"] == 0]
        assert ended[0]["status"] == 5 and "terminated" in ended[0]["log_content"], ended
        assert not (tmp_path / "slow").exists()

        # bk-job's type codes, on the same servers
        token = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "bkrepo", "type": "SECRET_KEY",
            "credential_secret_key": TOKEN})
        repo = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "bkrepo", "alias": "bk-repo", "type": "BLUEKING_ARTIFACTORY",
            "access_params": {"base_url": artifact_server},
            "credential_id": token["data"]["id"]})
        assert repo["result"], repo
        s3_cred = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "cos", "type": "APP_ID_SECRET_KEY",
            "credential_access_key": s3_server["access"],
            "credential_secret_key": s3_server["secret"]})
        cos = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "cos", "alias": "cos", "type": "TENCENT_CLOUD_COS",
            "access_params": {"region": "us-east-1", "endpoint_url": s3_server["endpoint"]},
            "credential_id": s3_cred["data"]["id"]})
        assert cos["result"], cos
        shown = await wire.v3("get_file_source_detail", {"bk_biz_id": 2, "code": "cos"},
                              method="GET")
        assert shown["data"]["file_source_type_code"] == "TENCENT_CLOUD_COS", shown
        dest = tmp_path / "dest"
        out = await asyncio.to_thread(transfer, running, {"file_source_code": "bkrepo"},
                                      ["proj/generic-local/v1/tool.sh"], str(dest / "repo"))
        assert out["data"]["job_instance"]["status"] == 3, out
        assert (dest / "repo" / "tool.sh").read_bytes() == b"echo tool\n"
        out = await asyncio.to_thread(transfer, running, {"file_source_code": "cos"},
                                      ["releases/v1/payload.bin"], str(dest / "cos"))
        assert out["data"]["job_instance"]["status"] == 3, out
        assert (dest / "cos" / "payload.bin").read_bytes() == b"s3 bytes\n"
        # a COS source wants an access key; an Artifactory file is project/repo/path
        bad = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "cos2", "alias": "cos2", "type": "TENCENT_CLOUD_COS",
            "access_params": {"region": "us-east-1", "endpoint_url": s3_server["endpoint"]},
            "credential_id": token["data"]["id"]})
        assert bad["code"] == 1241010, bad
        short = await wire.v3("fast_transfer_file", {
            "bk_biz_id": 2, "account_alias": "root", "file_target_path": str(dest / "x"),
            "file_source_list": [{"file_type": 3, "file_source_code": "bkrepo",
                                  "file_list": ["v1/tool.sh"]}],
            "target_server": {"ip_list": [{"ip": IPS[0], "bk_cloud_id": 0}]}})
        assert short["code"] == 1241010 and "project/repo/path" in short["message"], short


async def test_any_download_error_ends_the_download_with_its_reason(
        tmp_path: Path, database_url: str, artifact_server: str) -> None:
    """A token no HTTP header can carry raised neither a JobError, a timeout nor an
    OSError: the targets' file logs stayed at "Waiting to download" and the step ended
    abnormal, with no reason."""
    token = "tøken-kept-sealed-中"
    async with run_server(tmp_path, database_url, server=LOOPBACK) as running:
        await running.start_agents(IPS)
        wire = running.wire
        cred = await wire.v3("create_credential", {
            "bk_biz_id": 2, "name": "odd", "type": "SECRET_KEY",
            "credential_secret_key": token})
        assert cred["result"], cred
        made = await wire.v3("create_file_source", {
            "bk_biz_id": 2, "code": "odd", "alias": "odd", "type": "HTTP",
            "access_params": {"base_url": artifact_server}, "credential_id": cred["data"]["id"],
            "file_prefix": "repo/"})
        assert made["result"], made
        out = await asyncio.to_thread(transfer, running, {"file_source_code": "odd"},
                                      ["app/app.conf"], str(tmp_path / "dest"))
        assert out["data"]["job_instance"]["status"] == 4, out
        hosts = out["data"]["step_instance_list"][0]["step_ip_result_list"]
        assert {h["status"] for h in hosts} != {9}, hosts
        logs = await asyncio.to_thread(ip_logs, running, out)
        for ip in IPS:
            [row] = [r for r in logs[ip] if r["mode"] == 0]
            assert row["status"] == 5, row
            assert "Download from file source odd (odd) failed" in row["log_content"], row
            assert "UnicodeEncodeError" in row["log_content"], row
        text = json.dumps(logs, ensure_ascii=False) + json.dumps(out, ensure_ascii=False)
        assert "kept-sealed" not in text
        assert not (tmp_path / "dest").exists()
