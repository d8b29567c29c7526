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
FILES = {"/repo/app/app.conf": b"port = 8080\n", "/repo/app/run.sh": b"echo run\n"}


class Artifacts(BaseHTTPRequestHandler):
    """An artifact server: GET under /repo with basic authentication (user ``ci``)."""

    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(f"ci:{SECRET}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="artifacts"')
            self.end_headers()
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

        # what goes wrong is said in the envelope
        missing = await asyncio.to_thread(transfer, running, {"file_source_code": "artifacts"},
                                          ["app/nope"], str(dest / "x"))
        assert missing["code"] == 1262006 and "HTTP 404" in missing["message"], missing
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
        assert refused["code"] == 1262006 and "HTTP 403" in refused["message"], refused

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
    for extra, code in (({"type": "S3", "access_params": {"endpoint_url": "http://s"}}, 1241010),
                        ({"type": "HTTP", "access_params": {}}, 1241004),
                        ({"type": "HTTP", "access_params": {"base_url": "ftp://x"}}, 1241010)):
        answer = await wire.v3("create_file_source", {**base, **extra})
        assert answer["code"] == code, (extra, answer)
    ok = await wire.v3("create_file_source", {**base, "type": "HTTP",
                                              "access_params": {"base_url": "http://x"}})
    assert ok["result"], ok
    again = await wire.v3("create_file_source", {**base, "type": "HTTP",
                                                 "access_params": {"base_url": "http://x"}})
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
