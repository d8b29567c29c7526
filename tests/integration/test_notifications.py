"""Job-end notifications: signed webhooks and mails, retried until accepted, sent once,
and delivered by the next server when the first stopped before it could."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.integration.harness import (
    TEST_ENGINE,
    Running,
    Wire,
    bound_socket,
    eventually,
    free_port,
    listening,
    run_server,
    serve_on,
)

from jobfleet.engine.callbacks import IN_FLIGHT
from jobfleet.engine.notify import SmtpSettings
from jobfleet.server import EngineSettings, Server, ServerSettings, read_bootstrap
from jobfleet.store.notify import NotifyStore, shown_url
from jobfleet.store.tables import notify_configs, outbox

SECRET = "hook-key-0123456789"
ADMIN = "/api/jobfleet/v1"
# webhooks never reach loopback unless the operator allows it: these receivers live there
LOOPBACK = ["127.0.0.0/8"]
ALLOW_LOOPBACK = {"callback_allow": LOOPBACK}


@pytest.fixture
async def running(tmp_path: Path, database_url: str) -> AsyncIterator[Running]:
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as run:
        yield run


class Hook:
    """A webhook receiver on loopback: fails ``failures`` times, then records what it takes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.sock = bound_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def server(self) -> uvicorn.Server:
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        return uvicorn.Server(uvicorn.Config(app, log_level="warning"))

    async def hook(self, request: Request) -> Response:
        got = (dict(request.headers), await request.body())
        self.attempts.append(got)
        if len(self.attempts) <= self.failures:
            return Response("busy", status_code=500)
        self.accepted.append(got)
        return Response("ok")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _headers, body in self.accepted]


def signed(headers: dict[str, str], body: bytes, secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-jobfleet-signature", ""), expected)


async def admin(wire: Wire, method: str, path: str, body: Any = None,
                **params: Any) -> dict[str, Any]:
    resp = await wire.http.request(method, ADMIN + path, json=body, params=params,
                                   headers=wire.headers())
    return dict(resp.json())


async def add_config(wire: Wire, biz: int = 2, **body: Any) -> dict[str, Any]:
    answer = await admin(wire, "POST", f"/businesses/{biz}/notify-configs", body)
    assert answer["result"], answer
    return dict(answer["data"])


async def pending_rows(server: Server) -> list[Any]:
    async with server.db.connect() as conn:
        return list(await conn.execute(select(outbox).where(outbox.c.kind != "callback")))


async def test_failed_job_notifies_once_after_a_500_with_a_valid_signature(
        running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wire = running.wire
    await running.start_agents(["127.0.0.2"])
    async with listening(Hook(failures=1)) as hook:
        config = await add_config(wire, channel="webhook", target=hook.url, secret=SECRET,
                                  statuses=[4, "abnormal_state"])
        assert config["statuses"] == [4, 9] and config["has_secret"] is True
        assert "secret" not in config
        sub = await wire.run_script("echo failing; exit 3", ["127.0.0.2"], task_name="nightly")
        await wire.wait(sub["job_instance_id"])
        await eventually(lambda: asyncio.sleep(0, hook.accepted))
        await asyncio.sleep(1.0)  # nothing more may come
        assert len(hook.attempts) == 2 and len(hook.accepted) == 1
        (first_headers, first_body), (headers, body) = hook.attempts
        assert first_body == body
        assert headers["x-jobfleet-delivery"] == first_headers["x-jobfleet-delivery"]
        assert headers["x-jobfleet-event"] == "job_finished"
        assert signed(headers, body) and not signed(headers, body, "another-key-123")
        event = json.loads(body)
        assert {k: event[k] for k in ("job_instance_id", "name", "status", "status_name",
                                      "bk_biz_id", "bk_scope_type", "bk_scope_id", "operator",
                                      "launch_mode")} == {
            "job_instance_id": sub["job_instance_id"], "name": "nightly", "status": 4,
            "status_name": "FAIL", "bk_biz_id": 2, "bk_scope_type": "biz", "bk_scope_id": "2",
            "operator": "admin", "launch_mode": 2}
        assert event["end_time"] >= event["start_time"] and event["total_time"] >= 0
        (step,) = event["steps"]
        assert step["step_instance_id"] == sub["step_instance_id"]
        assert step["status"] == 4 and step["hosts"] == {"total": 1, "success": 0, "failed": 1}
        assert "'nightly'" in event["summary"] and "failed" in event["summary"]
        assert "http" not in event["summary"]
        (row,) = await pending_rows(running.server)
        assert (row.kind, row.state, row.attempts) == ("webhook", "done", 2)
        assert str(row.id) == headers["x-jobfleet-delivery"]
        assert SECRET not in row.payload

        # a job that succeeds does not trigger a config listening for failures
        ok = await wire.run_script("echo fine", ["127.0.0.2"])
        data = await wire.wait(ok["job_instance_id"])
        assert data["job_instance"]["status"] == 3
        await asyncio.sleep(1.0)
        assert len(hook.attempts) == 2
        assert len(await pending_rows(running.server)) == 1

        # disabled: silent even for a failure
        answer = await admin(wire, "PUT", f"/businesses/2/notify-configs/{config['id']}",
                             {"enabled": False})
        assert answer["result"] and answer["data"]["enabled"] is False
        bad = await wire.run_script("exit 1", ["127.0.0.2"])
        await wire.wait(bad["job_instance_id"])
        await asyncio.sleep(0.5)
        assert len(hook.attempts) == 2
    assert "outbox_retry kind=webhook" in caplog.text
    assert SECRET not in caplog.text


async def test_success_config_gets_success_only(running: Running) -> None:
    await running.start_agents(["127.0.0.2"])
    async with listening(Hook()) as hook:
        await add_config(running.wire, channel="webhook", target=hook.url, secret=SECRET,
                         statuses=["SUCCESS"])
        bad = await running.wire.run_script("exit 1", ["127.0.0.2"])
        await running.wire.wait(bad["job_instance_id"])
        good = await running.wire.run_script("echo ok", ["127.0.0.2"])
        await running.wire.wait(good["job_instance_id"])
        await eventually(lambda: asyncio.sleep(0, hook.accepted))
        await asyncio.sleep(0.5)
        assert [b["job_instance_id"] for b in hook.bodies()] == [good["job_instance_id"]]
        assert hook.bodies()[0]["status_name"] == "SUCCESS"


class Mailbox:
    """An SMTP server on loopback (aiosmtpd) that refuses the first mail, then keeps them."""

    def __init__(self, refusals: int = 1) -> None:
        self.refusals = refusals
        self.tries = 0
        self.messages: list[tuple[str, list[str], Message]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        with self.lock:
            self.tries += 1
            if self.tries <= self.refusals:
                return "451 4.3.0 try again later"
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  message_from_bytes(envelope.content)))
        return "250 OK"


@asynccontextmanager
async def server_with_mail(tmp_path: Path, database_url: str,
                           smtp: SmtpSettings) -> AsyncIterator[Running]:
    """What ``running`` gives, with a mail server in the server's settings."""
    sock = bound_socket()
    settings = ServerSettings(data_dir=tmp_path / "server", port=sock.getsockname()[1],
                              database_url=database_url, engine=EngineSettings(**TEST_ENGINE),
                              heartbeat=2.0, log_level="warning", smtp=smtp,
                              callback_allow=LOOPBACK)
    server = Server(settings)
    uv = server.listener()
    task = await serve_on(uv, sock)
    boot = read_bootstrap(settings.data_dir)
    wire = Wire(settings.url, boot["bk_app_code"], boot["bk_app_secret"])
    run = Running(server, settings.url, boot, wire, tmp_path)
    try:
        yield run
    finally:
        for ip in list(run.agents):
            await run.stop_agent(ip)
        await wire.close()
        uv.should_exit = True
        await task


async def test_email_is_delivered_through_smtp(tmp_path: Path, database_url: str) -> None:
    box = Mailbox(refusals=1)
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    await asyncio.to_thread(controller.start)
    smtp = SmtpSettings(host="127.0.0.1", port=controller.port, sender="jobs@example.org",
                        timeout=5.0)
    try:
        async with server_with_mail(tmp_path, database_url, smtp) as run:
            await run.start_agents(["127.0.0.2"])
            await add_config(run.wire, channel="email",
                             target=["ops@example.org", "dev@example.org"], statuses=[3])
            failed = await run.wire.run_script("exit 1", ["127.0.0.2"])
            await run.wire.wait(failed["job_instance_id"])
            sub = await run.wire.run_script("echo mailed", ["127.0.0.2"], task_name="backup db")
            await run.wire.wait(sub["job_instance_id"])
            await eventually(lambda: asyncio.sleep(0, box.messages), 20)
            await asyncio.sleep(1.0)  # nothing more may come
            assert box.tries == 2 and len(box.messages) == 1
            sender, rcpt, msg = box.messages[0]
            assert sender == "jobs@example.org"
            assert sorted(rcpt) == ["dev@example.org", "ops@example.org"]
            assert msg["Subject"] == (f"[jobfleet] Job backup db (#{sub['job_instance_id']}) "
                                      "succeeded")
            text = msg.get_payload(decode=True).decode()
            assert "'backup db'" in text and "succeeded" in text
            assert "1 of 1 hosts succeeded" in text
            (row,) = await pending_rows(run.server)
            assert (row.kind, row.state, row.attempts) == ("email", "done", 2)
            assert msg["X-Jobfleet-Delivery"] == str(row.id)
    finally:
        await asyncio.to_thread(controller.stop)


async def test_email_without_a_mail_server_fails_at_once(running: Running) -> None:
    # a config saved while the server had a mail server, which it has no more
    await NotifyStore(running.server.db, running.server.cipher).create(
        2, channel="email", target=["ops@example.org"], secret=None, statuses=[4],
        enabled=True, user="admin")
    await running.server.inventory.add(2, "127.0.0.42")
    sub = await running.wire.run_script("echo x", ["127.0.0.42"])
    await running.wire.wait(sub["job_instance_id"])

    async def given_up() -> Any:
        rows = await pending_rows(running.server)
        return rows if rows and rows[0].state == "failed" else None
    (row,) = await eventually(given_up)
    assert row.attempts == 1 and "smtp-host" in row.last_error


async def test_email_configs_are_refused_by_a_server_without_a_mail_relay(
        running: Running) -> None:
    """No mail can go out: saving an enabled email config says so and how to set one up,
    rather than keep a config whose every mail fails after the job it was for ended."""
    base = "/businesses/2/notify-configs"
    refused = await admin(running.wire, "POST", base,
                          {"channel": "email", "target": ["ops@example.org"], "statuses": [4]})
    assert (refused["result"], refused["code"]) == (False, 1241011), refused
    assert "no mail relay configured" in refused["message"], refused
    assert "--smtp-host" in refused["message"], refused
    assert (await admin(running.wire, "GET", base))["data"] == []
    # a disabled one may wait for the relay; a webhook needs none
    waiting = await add_config(running.wire, channel="email", target=["ops@example.org"],
                               statuses=[4], enabled=False)
    await add_config(running.wire, channel="webhook", target="http://127.0.0.1:9/x",
                     secret=SECRET, statuses=[4])
    path = f"{base}/{waiting['id']}"
    for change in ({"enabled": True}, {"target": ["dev@example.org"], "enabled": True}):
        answer = await admin(running.wire, "PUT", path, change)
        assert answer["code"] == 1241011 and "--smtp-host" in answer["message"], answer
    assert (await admin(running.wire, "GET", path))["data"]["enabled"] is False
    edited = await admin(running.wire, "PUT", path, {"statuses": [4, 9]})
    assert edited["result"] and edited["data"]["statuses"] == [4, 9], edited
    # its test message is not queued to fail: the answer says why at once
    tested = await admin(running.wire, "POST", f"{path}/tests", {})
    assert tested["code"] == 1241011 and "no mail relay" in tested["message"], tested
    assert await pending_rows(running.server) == []


async def test_notification_pending_at_shutdown_is_sent_by_the_next_server(
        tmp_path: Path, database_url: str) -> None:
    hook = Hook()  # bound but not listening yet: every attempt is refused
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK) as first:
        port = first.server.settings.port
        await add_config(first.wire, channel="webhook", target=hook.url, secret=SECRET,
                         statuses=[4])
        await first.server.inventory.add(2, "127.0.0.40")  # no agent: the job ends at once
        sub = await first.wire.run_script("echo x", ["127.0.0.40"])
        await first.wire.wait(sub["job_instance_id"])

        async def tried() -> bool:
            rows = await pending_rows(first.server)
            return bool(rows and rows[0].attempts)
        await eventually(tried)
        (row,) = await pending_rows(first.server)
        assert row.state == "pending" and "ConnectError" in row.last_error
    async with listening(hook), run_server(tmp_path, database_url, port=port,
                                               server=ALLOW_LOOPBACK) as second:
        await eventually(lambda: asyncio.sleep(0, hook.accepted), timeout=30)
        await asyncio.sleep(0.5)
        assert len(hook.accepted) == 1
        headers, body = hook.accepted[0]
        assert signed(headers, body)
        assert json.loads(body)["job_instance_id"] == sub["job_instance_id"]
        (row,) = await pending_rows(second.server)
        assert row.state == "done"


async def test_config_api_validates_and_never_shows_the_secret(running: Running) -> None:
    wire = running.wire
    base = "/businesses/2/notify-configs"
    for body, code in (
        ({"channel": "sms", "target": "x", "statuses": [4]}, 1241010),
        ({"channel": "webhook", "target": "http://127.0.0.1:9/x", "statuses": [4]}, 1241004),
        ({"channel": "webhook", "target": "ftp://127.0.0.1:9/x", "secret": SECRET, "statuses": [4]},
         1241010),
        ({"channel": "webhook", "target": "http://u:p@127.0.0.1:9/x", "secret": SECRET,
          "statuses": [4]}, 1241010),
        ({"channel": "webhook", "target": "http://127.0.0.1:9/x", "secret": "short",
          "statuses": [4]}, 1241010),
        ({"channel": "webhook", "target": "http://127.0.0.1:9/x", "secret": SECRET,
          "statuses": [2]}, 1241010),
        ({"channel": "webhook", "target": "http://127.0.0.1:9/x", "secret": SECRET, "statuses": []},
         1241010),
        # more digits than a number is read from, in a list or a comma-separated text
        ({"channel": "webhook", "target": "http://127.0.0.1:9/x", "secret": SECRET,
          "statuses": ["9" * 5000]}, 1241010),
        ({"channel": "webhook", "target": "http://127.0.0.1:9/x", "secret": SECRET,
          "statuses": "4," + "9" * 5000}, 1241010),
        ({"channel": "email", "target": ["a@b.c\r\nBcc: x@y.z"], "statuses": [4]}, 1241010),
        ({"channel": "email", "target": ["ops@example.org"], "secret": SECRET,
          "statuses": [4]}, 1241010),
        ({"channel": "email", "statuses": [4]}, 1241004),
    ):
        answer = await admin(wire, "POST", base, body)
        assert (answer["result"], answer["code"]) == (False, code), (body, answer)
    created = await add_config(wire, channel="webhook", target="http://127.0.0.1:9/x",
                               secret=SECRET, statuses=["FAIL"])
    cid = created["id"]
    listed = await admin(wire, "GET", base)
    got = await admin(wire, "GET", f"{base}/{cid}")
    changed = await admin(wire, "PUT", f"{base}/{cid}",
                          {"secret": "rotated-key-000", "statuses": [4, 11]})
    assert changed["data"]["statuses"] == [4, 11]
    emptied = await admin(wire, "PUT", f"{base}/{cid}", {"secret": ""})
    assert emptied["code"] == 1241004
    nothing = await admin(wire, "PUT", f"{base}/{cid}", {})
    assert nothing["result"] is False
    for answer in (listed, got, changed):
        assert answer["result"], answer
        assert SECRET not in json.dumps(answer) and "rotated" not in json.dumps(answer)
    async with running.server.db.connect() as conn:
        stored = (await conn.execute(select(notify_configs.c.secret))).scalar_one()
    assert stored.startswith("enc:v1:")
    assert running.server.cipher.decrypt(stored) == "rotated-key-000"
    audit = await running.server.services.audit.recent(20)
    assert {"create_notify_config", "update_notify_config"} <= {e["action"] for e in audit}
    assert SECRET not in json.dumps(audit, default=str)

    # another business cannot see it; a user without the scope is refused
    assert (await admin(wire, "GET", f"/businesses/3/notify-configs/{cid}"))["code"] in (
        1243049, 1249404)
    await admin(wire, "POST", "/users", {"username": "bob"})
    bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "bob")
    try:
        assert (await admin(bob, "GET", base))["code"] == 9900403
    finally:
        await bob.close()
    deleted = await admin(wire, "DELETE", f"{base}/{cid}")
    assert deleted["result"] and deleted["data"]["id"] == cid
    assert (await admin(wire, "GET", f"{base}/{cid}"))["code"] == 1249404


async def test_a_webhook_url_is_whole_for_administrators_only(running: Running) -> None:
    """A webhook's URL often carries its token in the path (Slack's
    ``/services/T/B/TOKEN``), or is its token (a chat bot's ``https://host/TOKEN``): a
    business's other users, its audit entries and its console page see the URL to its
    host; an edit that sends back what was shown keeps the URL."""
    wire, base = running.wire, "/businesses/2/notify-configs"
    url = "https://127.0.0.1:9/services/T0/B0/SECRETTOKEN?key=QUERYTOKEN"
    shown = "https://127.0.0.1:9/******"
    created = await add_config(wire, channel="webhook", target=url, secret=SECRET,
                               statuses=[4])
    cid = created["id"]
    bot = await add_config(wire, channel="webhook", target="https://127.0.0.1:9/BOTTOKEN123",
                           secret=SECRET, statuses=[4])
    assert created["target"] == url
    assert (await admin(wire, "GET", f"{base}/{cid}"))["data"]["target"] == url
    await admin(wire, "POST", "/users", {"username": "bob"})
    granted = await admin(wire, "POST", "/users/bob/grants",
                          {"scope_type": "biz", "scope_id": "2"})
    assert granted["result"], granted
    assert (await admin(wire, "POST", "/users/bob/password",
                        {"password": "bob-password-1"}))["result"]
    bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "bob")
    try:
        listed = await admin(bob, "GET", base)
        got = await admin(bob, "GET", f"{base}/{cid}")
        assert got["data"]["target"] == shown, got
        got_bot = await admin(bob, "GET", f"{base}/{bot['id']}")
        assert got_bot["data"]["target"] == shown, got_bot
        changed = await admin(bob, "PUT", f"{base}/{cid}",
                              {"target": shown, "statuses": [4, 11]})
        assert changed["result"] and changed["data"]["statuses"] == [4, 11], changed
        tested = await admin(bob, "POST", f"{base}/{cid}/tests", {})
        assert tested["result"], tested
        entries = await admin(bob, "GET", "/audit/entries", bk_biz_id=2, length=50)
        assert entries["result"] and entries["data"]["total"] >= 3, entries
        for answer in (listed, got, got_bot, changed, entries):
            assert "TOKEN" not in json.dumps(answer), answer
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
            await http.post("/login", data={"username": "bob", "password": "bob-password-1"})
            page = await http.get("/notifications?biz=2")
            assert page.status_code == 200 and shown in page.text, page.text
            assert "TOKEN" not in page.text
    finally:
        await bob.close()
    assert (await admin(wire, "GET", f"{base}/{cid}"))["data"]["target"] == url
    # the store holds it sealed: the config, and the test message waiting in the outbox
    async with running.server.db.connect() as conn:
        stored = [tuple(r) for r in await conn.execute(select(notify_configs))]
        stored += [tuple(r) for r in await conn.execute(select(outbox))]
    assert len(stored) == 3 and "TOKEN" not in repr(stored), stored
    # an administrator's own edit may still replace it
    other = "https://127.0.0.1:9/other/T1/NEWTOKEN"
    assert (await admin(wire, "PUT", f"{base}/{cid}", {"target": other}))["result"]
    assert (await admin(wire, "GET", f"{base}/{cid}"))["data"]["target"] == other


async def test_a_masked_url_from_a_stale_page_keeps_the_url(running: Running) -> None:
    """The URL as any version of the server showed it to those who may not see it whole
    (``https://host:port/******`` now, ``https://host:port/services/******`` before),
    sent back, keeps the stored URL; a URL holding the mask that is none of those is
    refused, never stored as the target."""
    wire, base = running.wire, "/businesses/2/notify-configs"
    url = "https://127.0.0.1:9/services/T0/B0/SECRETTOKEN"
    created = await add_config(wire, channel="webhook", target=url, secret=SECRET,
                               statuses=[4])
    cid = created["id"]
    await admin(wire, "POST", "/users", {"username": "bob"})
    granted = await admin(wire, "POST", "/users/bob/grants",
                          {"scope_type": "biz", "scope_id": "2"})
    assert granted["result"], granted
    bob = Wire(running.url, running.boot["bk_app_code"], running.boot["bk_app_secret"], "bob")
    try:
        for shown in ("https://127.0.0.1:9/services/******", "https://127.0.0.1:9/******"):
            kept = await admin(bob, "PUT", f"{base}/{cid}", {"target": shown, "enabled": True})
            assert kept["result"], (shown, kept)
            assert (await admin(wire, "GET", f"{base}/{cid}"))["data"]["target"] == url
        for foreign in (
            "https://127.0.0.1:10/services/******",  # another port
            "http://127.0.0.1:9/******",  # another scheme
            "https://127.0.0.2:9/******",  # another host
            "https://127.0.0.1:9/other/******",  # not this URL's path
            "https://127.0.0.1:9/services/******?key=1",
            "https://127.0.0.1:9/services/******/more",
        ):
            refused = await admin(bob, "PUT", f"{base}/{cid}", {"target": foreign})
            assert (refused["result"], refused["code"]) == (False, 1241010), (foreign, refused)
            assert "******" in refused["message"], refused
    finally:
        await bob.close()
    assert (await admin(wire, "GET", f"{base}/{cid}"))["data"]["target"] == url
    # nor does a new config take a mask for its target
    made = await admin(wire, "POST", base, {"channel": "webhook", "secret": SECRET,
                                            "target": "https://127.0.0.1:9/******",
                                            "statuses": [4]})
    assert (made["result"], made["code"]) == (False, 1241010), made
    async with running.server.db.connect() as conn:
        stored = [running.server.cipher.decrypt(t)
                  for t in (await conn.execute(select(notify_configs.c.target))).scalars()]
    assert stored == [url]


@pytest.mark.parametrize("path", ["/businesses/x/notify-configs", "/businesses/2/notify-configs/0"])
async def test_bad_ids_answer_with_the_envelope(running: Running, path: str) -> None:
    answer = await admin(running.wire, "GET", path)
    assert answer["result"] is False and answer["code"] in (1241005, 1241010)


class Silent:
    """A webhook receiver on loopback that takes the request and never answers."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.url = ""
        self.open = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            await reader.read()  # until the sender gives up and closes
        finally:
            self.open -= 1
            writer.close()

    async def __aenter__(self) -> Silent:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_receiver_that_never_answers_holds_back_no_other(
        tmp_path: Path, database_url: str) -> None:
    """Each delivery waits for its own receiver only: one that never answers (here for
    the whole of a long timeout) delays neither another business's nor its own
    business's other notifications."""
    engine = {"callback_timeout": 60.0}
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK,
                          engine=engine) as running, Silent() as silent, \
            listening(Hook()) as hook:
        wire = running.wire
        stuck = await add_config(wire, channel="webhook", target=silent.url, secret=SECRET,
                                 statuses=[4])
        good = await add_config(wire, channel="webhook", target=hook.url, secret=SECRET,
                                statuses=[4])
        base = "/businesses/2/notify-configs"
        for config in (stuck, good):
            sent = await admin(wire, "POST", f"{base}/{config['id']}/tests", {})
            assert sent["result"], sent
        await eventually(lambda: asyncio.sleep(0, hook.accepted), timeout=30)
        # the silent receiver still holds its request: nothing waited for it
        assert silent.open == 1
        [row] = [r for r in await pending_rows(running.server)
                 if r.target != shown_url(hook.url)]
        assert (row.state, row.attempts) == ("pending", 0)


async def test_a_receiver_that_never_answers_has_only_its_share_of_the_slots(
        tmp_path: Path, database_url: str) -> None:
    """More deliveries due to a receiver that never answers than a node sends at once
    take ``callback_per_receiver`` of the node's slots, not all of them: another
    receiver's notification and a job's callback go out while they wait."""
    per_receiver = EngineSettings().callback_per_receiver
    engine = {"callback_timeout": 60.0}
    async with run_server(tmp_path, database_url, server=ALLOW_LOOPBACK,
                          engine=engine) as running, Silent() as silent, \
            listening(Hook()) as hook, listening(Hook()) as callback:
        wire = running.wire
        base = "/businesses/2/notify-configs"
        stuck = await add_config(wire, channel="webhook", target=silent.url, secret=SECRET,
                                 statuses=[4])
        for _ in range(IN_FLIGHT + 8):
            sent = await admin(wire, "POST", f"{base}/{stuck['id']}/tests", {})
            assert sent["result"], sent
        await eventually(lambda: asyncio.sleep(0, silent.open >= per_receiver), timeout=30)
        good = await add_config(wire, channel="webhook", target=hook.url, secret=SECRET,
                                statuses=[3])
        sent = await admin(wire, "POST", f"{base}/{good['id']}/tests", {})
        assert sent["result"], sent
        await running.server.inventory.add(2, "127.0.0.40")  # no agent: the job ends at once
        job = await wire.run_script("echo x", ["127.0.0.40"], callback_url=callback.url)
        await eventually(lambda: asyncio.sleep(0, hook.accepted and callback.accepted),
                         timeout=20)
        assert callback.bodies()[0]["job_instance_id"] == job["job_instance_id"]
        # the silent receiver holds its share and no more; its other deliveries wait
        assert silent.open == per_receiver
        waiting = [r for r in await pending_rows(running.server)
                   if r.target == shown_url(silent.url)]
        assert len(waiting) == IN_FLIGHT + 8 + 1  # the tests, and the job's notification
        assert {(r.state, r.attempts) for r in waiting} == {("pending", 0)}


async def test_a_webhook_the_guard_would_never_send_to_is_refused_when_saved(
        tmp_path: Path, database_url: str) -> None:
    """Saved, such a config would fail every delivery, seen only in the server's log."""
    async with run_server(tmp_path, database_url) as run:  # loopback not allowed
        base = "/businesses/2/notify-configs"
        body = {"channel": "webhook", "secret": SECRET, "statuses": [4]}
        for target in ("http://127.0.0.1:9/x", "https://[::1]:9/x", "http://[::ffff:127.0.0.1]/"):
            answer = await admin(run.wire, "POST", base, {**body, "target": target})
            assert (answer["result"], answer["code"]) == (False, 1241010), answer
            assert "not an allowed destination" in answer["message"]
            assert "--callback-allow" in answer["message"]
        # a name is checked at each delivery, where it resolves then
        named = await add_config(run.wire, **body, target="http://localhost:9/x")
        changed = await admin(run.wire, "PUT", f"{base}/{named['id']}",
                              {"target": "http://127.0.0.2:9/x"})
        assert (changed["result"], changed["code"]) == (False, 1241010), changed
        got = await admin(run.wire, "GET", f"{base}/{named['id']}")
        assert got["data"]["target"] == "http://localhost:9/x"
