"""Callbacks arrive exactly once despite failures and restarts; sensitive params stay hidden."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.integration.harness import (
    TEST_ENGINE,
    Running,
    b64,
    bound_socket,
    eventually,
    listening,
    run_server,
    serve_on,
)

from jobfleet.server import Server
from jobfleet.store.tables import job_instances, outbox, step_instances

# callbacks never reach loopback unless the operator allows it: these receivers live there
LOOPBACK = ["127.0.0.0/8"]
ALLOW_LOOPBACK = {"callback_allow": LOOPBACK}


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as run:
        yield run


class Receiver:
    """A real HTTP endpoint on loopback that fails as told, then records what it accepts."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self.sock = bound_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def server(self) -> uvicorn.Server:
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        return uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def hook(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.attempts.append(body)
        self.queries.append(request.url.query)
        if len(self.attempts) <= self.failures:
            return Response("busy", status_code=500)
        self.accepted.append(body)
        return Response("ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    # the JSON post and the form post sent at once after it both fail: a retry follows
    async with listening(Receiver(failures=2)) as rec:
        yield rec


async def test_callback_retried_after_500_arrives_exactly_once(running: Running,
                                                               receiver: Receiver) -> None:
    await running.start_agents(["127.0.0.2"])
    # the receiver's token in the URL is stored sealed (a URL near the longest one taken
    # too), and still reaches it
    token = "CALLBACKTOKEN" + "x" * 950
    url = receiver.url + f"?token={token}"
    sub = await running.wire.run_script("echo hi", ["127.0.0.2"], callback_url=url)
    await running.wire.wait(sub["job_instance_id"])
    await eventually(lambda: asyncio.sleep(0, receiver.accepted), timeout=20)
    await asyncio.sleep(1.0)  # nothing more may come
    assert len(receiver.attempts) == 3 and len(receiver.accepted) == 1
    assert receiver.queries == [f"token={token}"] * 3
    async with running.server.db.connect() as conn:
        stored = [tuple(r) for r in await conn.execute(select(job_instances))]
        stored += [tuple(r) for r in await conn.execute(select(outbox))]
    assert len(stored) == 2 and "CALLBACKTOKEN" not in repr(stored), stored
    body = receiver.accepted[0]
    step = {"step_instance_id": sub["step_instance_id"], "status": 3}
    assert body == {"job_instance_id": sub["job_instance_id"], "status": 3,
                    "step_instances": [step], "step_instance_list": [step]}
    async with running.server.db.connect() as conn:
        row = (await conn.execute(select(outbox))).one()
    assert (row.state, row.attempts) == ("done", 2)


async def test_callback_survives_a_server_restart(tmp_path: Path, database_url: str) -> None:
    """The callback endpoint is down while the job ends; it is delivered by the next server."""
    from tests.integration.harness import Wire

    from jobfleet.server import EngineSettings, ServerSettings, read_bootstrap

    rec = Receiver()
    sock = bound_socket()
    settings = ServerSettings(data_dir=tmp_path / "server", port=sock.getsockname()[1],
                              database_url=database_url, engine=EngineSettings(**TEST_ENGINE),
                              heartbeat=2.0, log_level="warning",
                              callback_allow=LOOPBACK)
    first = Server(settings)
    uv = first.listener()
    task = await serve_on(uv, sock)
    boot = read_bootstrap(settings.data_dir)
    wire = Wire(settings.url, boot["bk_app_code"], boot["bk_app_secret"])
    await first.inventory.add(2, "127.0.0.40")  # no agent: the job ends at once
    sub = await wire.run_script("echo x", ["127.0.0.40"], callback_url=rec.url)
    await wire.wait(sub["job_instance_id"])

    async def tried() -> bool:
        async with first.db.connect() as conn:
            return bool((await conn.execute(select(outbox.c.attempts))).scalar_one())
    await eventually(tried)
    uv.should_exit = True
    await task
    hook = rec.server()
    hook_task = await serve_on(hook, rec.sock)
    port = settings.port
    second = Server(settings)
    uv2 = second.listener()
    task2 = await serve_on(uv2, bound_socket(port))
    try:
        await eventually(lambda: asyncio.sleep(0, rec.accepted), timeout=30)
        assert rec.accepted[0]["job_instance_id"] == sub["job_instance_id"]
        assert rec.accepted[0]["status"] == 4
    finally:
        await wire.close()
        uv2.should_exit = True
        hook.should_exit = True
        await asyncio.gather(task2, hook_task)


async def test_sensitive_params_never_appear_in_clear(running: Running, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-Pa55word-4321"
    await running.start_agents(["127.0.0.2"])
    sub = await running.wire.run_script(
        'if [ "$1" = "--password" ] && [ -n "$2" ]; then echo received; fi', ["127.0.0.2"],
        script_param=b64(f"--password {secret}"), is_param_sensitive=1)
    data = await running.wire.wait(sub["job_instance_id"])
    assert data["job_instance"]["status"] == 3
    logs = await running.wire.logs(sub["job_instance_id"], sub["step_instance_id"],
                                   ["127.0.0.2"])
    assert logs["127.0.0.2"] == "received\n"
    responses = [json.dumps(data), json.dumps(logs)]
    for name, params in (("get_job_instance_list", {"create_time_start": 1,
                                                     "create_time_end": 2**41}),
                         ("get_job_instance_ip_log", {
                             "job_instance_id": sub["job_instance_id"],
                             "step_instance_id": sub["step_instance_id"], "ip": "127.0.0.2",
                             "bk_cloud_id": 0})):
        answer = await running.wire.v3(name, {"bk_biz_id": 2, **params}, method="GET")
        responses.append(json.dumps(answer))
    for text in responses:
        assert secret not in text
    assert secret not in caplog.text
    async with running.server.db.connect() as conn:
        for table in (job_instances, step_instances):
            for row in await conn.execute(select(table)):
                assert secret not in json.dumps([str(v) for v in row])
        stored = (await conn.execute(select(step_instances.c.script_param))).scalar_one()
        assert stored.startswith("enc:v1:")
    if running.server.db.is_sqlite:
        for path in (tmp_path / "server").glob("jobfleet.db*"):
            assert secret.encode() not in path.read_bytes()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert secret.encode() not in path.read_bytes(), path
