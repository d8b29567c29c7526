"""File bytes over HTTP: operators' uploads, upload URLs, agents' writes and reads."""

from __future__ import annotations

import hashlib
import json
import os

from tests.integration.harness import Running


def agent_headers(running: Running, ip: str) -> dict[str, str]:
    cred = json.loads((running.data_dir / f"agent-{ip}" / "credential.json").read_text())
    return {"Authorization": f"Agent {cred['agent_id']}:{cred['agent_secret']}"}


async def test_operator_upload_streams_to_disk_with_checksum(running: Running) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    resp = await running.wire.http.post("/api/jobfleet/v1/files",
                                        params={"name": "pkg.tar.gz", "bk_biz_id": 2},
                                        content=data, headers=running.wire.headers())
    answer = resp.json()
    assert answer["result"], answer
    info = answer["data"]
    assert info["size"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["path"].endswith("/pkg.tar.gz")
    blob = running.server.services.blobs.path(info["file_id"])
    assert blob.read_bytes() == data and oct(blob.stat().st_mode & 0o777) == "0o600"


async def test_upload_limit_is_a_clear_error(running: Running) -> None:
    running.server.services.limits.max_file_size = 1000
    resp = await running.wire.http.post("/api/jobfleet/v1/files",
                                        params={"name": "big.bin", "bk_biz_id": 2},
                                        content=b"x" * 5000, headers=running.wire.headers())
    assert resp.status_code == 413
    assert resp.json()["code"] == 1241010 and "1000 bytes" in resp.json()["message"]
    assert not list(running.server.services.blobs.root.glob("*.part"))


async def test_generate_local_file_upload_url_flow(running: Running) -> None:
    answer = await running.wire.v3("generate_local_file_upload_url", {
        "bk_scope_type": "biz", "bk_scope_id": "2", "file_name_list": ["a.txt", "../b.conf"]})
    assert answer["result"], answer
    url_map = answer["data"]["url_map"]
    assert set(url_map) == {"a.txt", "b.conf"}
    target = url_map["a.txt"]
    assert target["path"].endswith("/a.txt")
    put = await running.wire.http.put(target["upload_url"], content=b"hello file")
    assert put.json()["result"] and put.json()["data"]["size"] == 10
    again = await running.wire.http.put(target["upload_url"], content=b"other")
    assert again.status_code == 409
    forged = target["upload_url"].split("?")[0] + "?token=nope"
    assert (await running.wire.http.put(forged, content=b"x")).status_code == 401


async def test_agents_write_and_read_only_their_blobs(running: Running) -> None:
    await running.start_agents(["127.0.0.2", "127.0.0.3"])
    hosts = {h.ip: h.bk_host_id for h in await running.server.inventory.list()}
    blobs = running.server.services.blobs
    blob_id = await blobs.create(name="app.log", kind="agent",
                                 writer_host_id=hosts["127.0.0.2"])
    url = f"/api/jobfleet/v1/agents/blobs/{blob_id}"
    # agents reach their blobs on the encrypted agent port
    async with running.agent_http() as http:
        other = await http.put(url, content=b"x", headers=agent_headers(running, "127.0.0.3"))
        assert other.status_code == 403
        assert (await http.put(url, content=b"x")).status_code == 401
        body = b"0123456789" * 1000
        put = await http.put(url, content=body, headers=agent_headers(running, "127.0.0.2"))
        assert put.json()["data"]["sha256"] == hashlib.sha256(body).hexdigest()
        denied = await http.get(url, headers=agent_headers(running, "127.0.0.3"))
        assert denied.status_code == 403
        await blobs.allow_readers([blob_id], [hosts["127.0.0.3"]])
        full = await http.get(url, headers=agent_headers(running, "127.0.0.3"))
        assert full.content == body
        assert full.headers["x-jobfleet-sha256"] == hashlib.sha256(body).hexdigest()
        part = await http.get(url, headers={**agent_headers(running, "127.0.0.3"),
                                            "Range": "bytes=9990-"})
        assert part.status_code == 206 and part.content == body[9990:]

