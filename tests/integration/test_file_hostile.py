"""File transfers against a hostile source host: what its agent lists is not trusted.

The hostile source enrolls for real and then answers the server's requests itself
over the WebSocket, naming files no honest listing could.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.integration.harness import Running
from tests.integration.test_agent_messages import raw_agent
from tests.integration.test_file_transfer import run_transfer, transfer_body

from jobfleet.domain import protocol

SOURCE = "127.0.0.2"
TARGET = "127.0.0.4"


# names that leave the target path, or are none
LEAVING = ["../../escape.txt", "/etc/escape.txt", "a/../../../escape.txt", "", ".", "bad\0name"]


async def test_a_listed_name_leaving_the_target_path_fails_that_source(
    running: Running, tmp_path: Path
) -> None:
    """Each name in a transfer of its own, on one server and one source connection: a
    server and agents started per name cost more than the transfers."""
    await running.start_agents([TARGET])
    requests: list[str] = []
    listing = {"rel": ""}
    async with raw_agent(running, SOURCE) as agent:
        agent.reader.cancel()

        async def answer() -> None:
            async for frame in agent.ws:
                message: dict[str, Any] = orjson.loads(frame)
                requests.append(message["t"])
                if message["t"] == protocol.FILE_LIST:
                    listed: protocol.ListedFile = {
                        "path": "/srv/escape.txt", "rel": listing["rel"], "size": 4,
                        "mode": 0o644}
                    await agent.send(dict(protocol.reply(message["id"], files=[listed])))

        answering = asyncio.create_task(answer())
        try:
            for n, rel in enumerate(LEAVING):
                requests.clear()
                listing["rel"] = rel
                dest = tmp_path / f"name{n}" / "deep" / "dest"
                sub, data = await run_transfer(running, transfer_body(
                    ["/srv/escape.txt"], [SOURCE], [TARGET], f"{dest}/", timeout=10),
                    timeout=60)
                assert data["job_instance"]["status"] == 4, (rel, data)
                result = data["step_instance_list"][0]["step_ip_result_list"][0]
                assert result["ip"] == TARGET and result["status"] == 329, (rel, result)
                # refused on the listing: the source is never asked for the bytes
                assert protocol.FILE_LIST in requests and "file_upload" not in requests, (
                    rel, requests)
                assert "file_seed" not in requests, (rel, requests)
                assert not list(tmp_path.rglob("escape.txt")), rel
                logs = await running.wire.v3("get_job_instance_ip_log", {
                    "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
                    "step_instance_id": sub["step_instance_id"], "bk_cloud_id": 0,
                    "ip": TARGET}, method="GET")
                assert "name" in logs["data"]["file_logs"][-1]["log_content"], (rel, logs)
        finally:
            answering.cancel()


async def test_a_source_name_that_is_not_utf8_fails_the_source_at_once(
    running: Running, tmp_path: Path
) -> None:
    await running.start_agents([SOURCE, TARGET])
    top = tmp_path / "odd"
    top.mkdir()
    (top / "good.txt").write_text("good\n")
    with open(os.path.join(os.fsencode(top), b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    _sub, data = await run_transfer(running, transfer_body(
        [str(top)], [SOURCE], [TARGET], f"{tmp_path}/dest/", timeout=60), timeout=60)
    assert data["job_instance"]["status"] == 4, data
    result = data["step_instance_list"][0]["step_ip_result_list"][0]
    assert result["status"] == 203, result
    logs = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": _sub["job_instance_id"],
        "step_instance_id": _sub["step_instance_id"], "bk_cloud_id": 0, "ip": TARGET},
        method="GET")
    assert "bad\\xff.txt" in logs["data"]["file_logs"][-1]["log_content"]
    assert "not valid UTF-8" in logs["data"]["file_logs"][-1]["log_content"]


async def test_a_target_name_that_is_no_file_name_is_refused_and_a_plain_one_renames(
    running: Running, tmp_path: Path
) -> None:
    await running.start_agents([SOURCE, TARGET])
    (tmp_path / "f.txt").write_text("f\n")
    for name in ("..", ".", "a/b", "../up.txt"):
        answer = await running.wire.v3("fast_transfer_file", transfer_body(
            [f"{tmp_path}/f.txt"], [SOURCE], [TARGET], f"{tmp_path}/t/x/",
            file_target_name=name))
        assert not answer["result"] and answer["code"] == 1241010, (name, answer)
        assert "file_target_name" in answer["message"]
    _sub, data = await run_transfer(running, transfer_body(
        [f"{tmp_path}/f.txt"], [SOURCE], [TARGET], f"{tmp_path}/t/x/",
        file_target_name="..renamed"))
    assert data["job_instance"]["status"] == 3, data
    assert (tmp_path / "t" / "x" / "..renamed").read_text() == "f\n"



@pytest.mark.parametrize("where", ["path", "error"])
async def test_text_the_database_cannot_hold_fails_only_the_host_that_sent_it(
    running: Running, tmp_path: Path, where: str
) -> None:
    """A hostile host lists a path with a NUL, or fails its upload with an error holding one
    (PostgreSQL refuses both): its own fetch fails, and the honest host's result is kept."""
    good = "127.0.0.5"
    await running.start_agents([good])
    (tmp_path / "f.txt").write_text("hello\n")
    asked: list[str] = []
    async with raw_agent(running, SOURCE) as agent:
        agent.reader.cancel()

        async def answer() -> None:
            async for frame in agent.ws:
                decoded = orjson.loads(frame)
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    asked.append(message["t"])
                    if message["t"] == protocol.FILE_LIST:
                        name = "f\0.txt" if where == "path" else "f.txt"
                        listed: protocol.ListedFile = {
                            "path": f"{tmp_path}/{name}", "rel": "f.txt", "size": 6, "mode": 0o644}
                        await agent.send(dict(protocol.reply(message["id"], files=[listed])))
                    elif message["t"] == protocol.FILE_UPLOAD:
                        failed: list[protocol.UploadResult] = [
                            {"blob": item["blob"], "status": 1, "error": "no\0such file"}
                            for item in message["items"]]
                        await agent.send(dict(protocol.reply(message["id"], results=failed)))

        answering = asyncio.create_task(answer())
        try:
            made = await running.wire.post("/api/jobfleet/v1/fetch", {
                "bk_biz_id": 2, "account_alias": "root", "file_list": [f"{tmp_path}/f.txt"],
                "target_server": {"ip_list": [{"ip": ip, "bk_cloud_id": 0}
                                              for ip in (good, SOURCE)]}})
            assert made["result"], made
            data = await running.wire.wait(made["data"]["job_instance_id"], timeout=30)
        finally:
            answering.cancel()
    results = {r["ip"]: r["status"]
               for r in data["step_instance_list"][0]["step_ip_result_list"]}
    assert results == {good: 9, SOURCE: 329 if where == "path" else 1}, data
    # a name no file system holds is never asked for
    assert (protocol.FILE_UPLOAD in asked) == (where == "error")
    logs = await running.wire.v3("get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": made["data"]["job_instance_id"],
        "step_instance_id": made["data"]["step_instance_id"], "bk_cloud_id": 0, "ip": SOURCE},
        method="GET")
    shown = "".join(f["log_content"] for f in logs["data"]["file_logs"])
    assert ("f\\x00.txt" if where == "path" else "no\u2400such file") in shown, logs


# what the source lists beside the file it was asked for (path, rel)
NOT_ASKED_FOR = [
    # a file it was not asked for, at a name of its choosing
    ("/root/.ssh/authorized_keys", ".ssh/authorized_keys"),
    # the file it was asked for, at another name
    ("/srv/app.tar", ".ssh/authorized_keys"),
    # a file beside the one asked for
    ("/srv/other.tar", "other.tar"),
]


async def test_a_source_listing_a_file_it_was_not_asked_for_fails_that_source(
    running: Running, tmp_path: Path
) -> None:
    """Each listing in a transfer of its own, on one server and one source connection,
    as in test_a_listed_name_leaving_the_target_path_fails_that_source."""
    honest = "127.0.0.5"
    await running.start_agents([TARGET, honest])
    (tmp_path / "good.txt").write_text("good\n")
    requests: list[str] = []
    listing = {"path": "", "rel": ""}
    async with raw_agent(running, SOURCE) as agent:
        agent.reader.cancel()

        async def answer() -> None:
            async for frame in agent.ws:
                decoded = orjson.loads(frame)
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    requests.append(message["t"])
                    if message["t"] == protocol.FILE_LIST:
                        listed: list[protocol.ListedFile] = [
                            {"path": "/srv/app.tar", "rel": "app.tar", "size": 4, "mode": 0o644},
                            {"path": listing["path"], "rel": listing["rel"], "size": 4,
                             "mode": 0o600}]
                        await agent.send(dict(protocol.reply(message["id"], files=listed)))

        answering = asyncio.create_task(answer())
        try:
            for n, (path, rel) in enumerate(NOT_ASKED_FOR):
                requests.clear()
                listing.update(path=path, rel=rel)
                dest = tmp_path / f"listing{n}" / "root"
                body = transfer_body(["/srv/app.tar"], [SOURCE], [TARGET], f"{dest}/",
                                     timeout=10)
                body["file_source_list"].append({
                    "file_list": [f"{tmp_path}/good.txt"], "account": {"alias": "root"},
                    "server": {"ip_list": [{"ip": honest, "bk_cloud_id": 0}]}})
                sub, data = await run_transfer(running, body, timeout=60)
                case = (path, rel)
                assert data["job_instance"]["status"] == 4, (case, data)
                result = data["step_instance_list"][0]["step_ip_result_list"][0]
                assert result["ip"] == TARGET and result["status"] == 329, (case, result)
                # refused on the listing: the source is never asked for the bytes
                assert protocol.FILE_LIST in requests and "file_upload" not in requests, (
                    case, requests)
                assert "file_seed" not in requests, (case, requests)
                assert not (dest / ".ssh").exists() and not (dest / "other.tar").exists(), case
                logs = await running.wire.v3("get_job_instance_ip_log", {
                    "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
                    "step_instance_id": sub["step_instance_id"], "bk_cloud_id": 0,
                    "ip": TARGET}, method="GET")
                assert "did not ask for" in str(logs["data"]["file_logs"]), (case, logs)
        finally:
            answering.cancel()


async def test_set_id_bits_a_source_lists_never_reach_the_targets(
    running: Running, tmp_path: Path
) -> None:
    """A hostile source serves a program and lists it set-user-ID (its directory set-group-ID
    and world-writable): a target whose account is root must not end up holding a set-ID
    program any local user could run."""
    await running.start_agents([TARGET])
    body = b"#!/bin/sh\nid\n"
    top = f"{tmp_path}/pkg"
    async with raw_agent(running, SOURCE) as agent, running.agent_http() as http:
        agent.reader.cancel()
        auth = {"Authorization": f"Agent {agent.cred.agent_id}:{agent.cred.agent_secret}"}

        async def answer() -> None:
            async for frame in agent.ws:
                decoded = orjson.loads(frame)
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    if message["t"] == protocol.FILE_LIST:
                        listed: list[protocol.ListedFile] = [
                            {"path": top, "rel": "pkg", "size": 0, "mode": 0o3777,
                             "is_dir": True},
                            {"path": f"{top}/tool", "rel": "pkg/tool", "size": len(body),
                             "mode": 0o6755},
                            {"path": f"{top}/shared", "rel": "pkg/shared", "size": len(body),
                             "mode": 0o1666}]
                        await agent.send(dict(protocol.reply(message["id"], files=listed)))
                    elif message["t"] == protocol.FILE_UPLOAD:
                        results: list[protocol.UploadResult] = []
                        for item in message["items"]:
                            put = await http.put(f"/api/jobfleet/v1/agents/blobs/{item['blob']}",
                                                 content=body, headers=auth)
                            assert put.status_code == 200, put.text
                            results.append({"blob": item["blob"], "size": len(body),
                                            "sha256": hashlib.sha256(body).hexdigest()})
                        await agent.send(dict(protocol.reply(message["id"], results=results)))

        answering = asyncio.create_task(answer())
        try:
            dest = tmp_path / "dest"
            _sub, data = await run_transfer(running, transfer_body(
                [top], [SOURCE], [TARGET], f"{dest}/", timeout=20), timeout=60)
        finally:
            answering.cancel()
    assert data["job_instance"]["status"] == 3, data
    assert (dest / "pkg" / "tool").read_bytes() == body
    # the permission bits are the source's; set-ID bits never come from a transfer
    assert oct((dest / "pkg" / "tool").stat().st_mode & 0o7777) == oct(0o755)
    assert oct((dest / "pkg" / "shared").stat().st_mode & 0o7777) == oct(0o666)
    assert oct((dest / "pkg").stat().st_mode & 0o7777) == oct(0o1777)
    # the server drops them itself, for targets whose agents are of an earlier release
    rows = await running.server.services.file_logs.rows(_sub["step_instance_id"], 0)
    assert {r.src_path: r.file_mode for r in rows} == {
        top: 0o1777, f"{top}/tool": 0o755, f"{top}/shared": 0o666}


# answers the gateway refuses (they do not fit the protocol's types): each in a
# transfer of its own, with the kind of request it answers
REFUSED_REPLIES: list[tuple[str, dict[str, Any]]] = [
    (protocol.FILE_LIST, {"files": "junk"}),
    (protocol.FILE_LIST, {"files": [{"path": "/srv/a", "rel": "a", "size": 2**70}]}),
    (protocol.FILE_LIST, {"status": "failed"}),
    ("file_upload", {"results": [{"blob": 5}]}),
]


async def test_a_source_answer_the_server_refuses_fails_the_step_at_once(
    running: Running, tmp_path: Path
) -> None:
    """A source's answer the gateway refuses never reaches the step as an answer; the
    step's hosts fail at once with the reason, not at the step's timeout (600 s here)."""
    await running.start_agents([TARGET])
    case: dict[str, Any] = {}
    async with raw_agent(running, SOURCE) as agent:
        agent.reader.cancel()

        async def answer() -> None:
            async for frame in agent.ws:
                decoded = orjson.loads(frame)
                for message in decoded if isinstance(decoded, list) else [decoded]:
                    kind = message["t"]
                    if kind == case["kind"]:
                        await agent.send({"t": "reply", "id": message["id"], **case["reply"]})
                    elif kind == protocol.FILE_LIST:
                        listed: protocol.ListedFile = {
                            "path": "/srv/app.tar", "rel": "app.tar", "size": 4,
                            "mode": 0o644}
                        await agent.send(dict(protocol.reply(message["id"], files=[listed])))

        answering = asyncio.create_task(answer())
        try:
            for n, (kind, reply) in enumerate(REFUSED_REPLIES):
                case.update(kind=kind, reply=reply)
                started = asyncio.get_running_loop().time()
                sub, data = await run_transfer(running, transfer_body(
                    ["/srv/app.tar"], [SOURCE], [TARGET], f"{tmp_path}/r{n}/", timeout=600),
                    timeout=60)
                assert asyncio.get_running_loop().time() - started < 20, (kind, reply)
                assert data["job_instance"]["status"] == 4, (kind, reply, data)
                result = data["step_instance_list"][0]["step_ip_result_list"][0]
                assert result["ip"] == TARGET and result["status"] != 9, (kind, result)
                logs = await running.wire.v3("get_job_instance_ip_log", {
                    "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
                    "step_instance_id": sub["step_instance_id"], "bk_cloud_id": 0,
                    "ip": TARGET}, method="GET")
                assert "refused" in str(logs["data"]["file_logs"]), (kind, reply, logs)
        finally:
            answering.cancel()
