"""Many small files in one request (bundles, ``domain.protocol``): a source agent's bundle upload
and a target agent's bundle download, with each file's own outcome."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tests.integration.harness import Running
from tests.integration.test_file_http import agent_headers
from tests.integration.test_file_transfer import run_transfer, transfer_body

BLOBS = "/api/jobfleet/v1/agents/blobs/"


def bundle_body(files: list[tuple[str, bytes]], sizes: list[int] | None = None) -> bytes:
    manifest = json.dumps({"files": [
        {"blob": b, "size": len(d) if sizes is None else sizes[n]}
        for n, (b, d) in enumerate(files)]}).encode()
    return len(manifest).to_bytes(4, "big") + manifest + b"".join(d for _, d in files)


async def _hosts(running: Running) -> dict[str, int]:
    await running.start_agents(["127.0.0.2", "127.0.0.3"])
    return {h.ip: h.bk_host_id for h in await running.server.inventory.list()}


async def test_bundle_upload_stores_each_file_and_download_returns_them_in_order(
    running: Running,
) -> None:
    hosts = await _hosts(running)
    blobs = running.server.services.blobs
    datas = [f"file {n}\n".encode() * (n + 1) for n in range(40)] + [b""]
    ids = await blobs.create_many([f"f{n}" for n in range(len(datas))], kind="agent",
                                  writer_host_id=hosts["127.0.0.2"])
    source, target = agent_headers(running, "127.0.0.2"), agent_headers(running, "127.0.0.3")
    async with running.agent_http() as http:
        body = bundle_body(list(zip(ids, datas, strict=True)))
        put = await http.put(BLOBS + "bundle", content=body, headers=source)
        answer = put.json()
        assert answer["result"], answer
        assert [f["file_id"] for f in answer["data"]["files"]] == ids
        assert [f["sha256"] for f in answer["data"]["files"]] == [
            hashlib.sha256(d).hexdigest() for d in datas]
        stored = await blobs.get_many(ids)
        assert all(stored[b].state == "complete" and stored[b].size == len(d)
                   for b, d in zip(ids, datas, strict=True))
        assert not list(blobs.root.glob("*.part"))
        # the piece digests a swarm would need come from the stored bytes
        assert await blobs.pieces(ids[3]) == [hashlib.sha256(datas[3]).digest()]

        denied = await http.post(BLOBS + "bundle", json={"blobs": ids}, headers=target)
        assert denied.status_code == 403 and denied.json()["result"] is False
        await blobs.allow_readers(ids, [hosts["127.0.0.3"]])
        order = list(reversed(ids))
        got = await http.post(BLOBS + "bundle", json={"blobs": order}, headers=target)
        assert got.status_code == 200
        assert got.content == b"".join(reversed(datas))


async def test_bundle_upload_refuses_what_the_agent_may_not_write_and_bad_bodies(
    running: Running,
) -> None:
    hosts = await _hosts(running)
    blobs = running.server.services.blobs
    mine = await blobs.create_many(["a", "b"], kind="agent", writer_host_id=hosts["127.0.0.2"])
    theirs = await blobs.create_many(["c"], kind="agent", writer_host_id=hosts["127.0.0.3"])
    source = agent_headers(running, "127.0.0.2")
    async with running.agent_http() as http:
        other = await http.put(BLOBS + "bundle", headers=source,
                               content=bundle_body([(mine[0], b"x"), (theirs[0], b"y")]))
        assert other.status_code == 403
        short = await http.put(BLOBS + "bundle", headers=source,
                               content=bundle_body([(mine[0], b"x"), (mine[1], b"y")],
                                                   sizes=[1, 5]))
        assert short.status_code == 400 and "ended inside file 2" in short.json()["message"]
        long = await http.put(BLOBS + "bundle", headers=source,
                              content=bundle_body([(mine[0], b"x")]) + b"extra")
        assert long.status_code == 400 and long.json()["result"] is False
        for bad in (b"", b"\x00\x00\x00\x05{}", (3).to_bytes(4, "big") + b"[1]",
                    bundle_body([(mine[0], b"x"), (mine[0], b"x")]),
                    bundle_body([(mine[0], b"x" * (2 * 1024 * 1024))])):
            refused = await http.put(BLOBS + "bundle", headers=source, content=bad)
            assert refused.status_code == 400, (bad[:40], refused.text)
            assert refused.json()["code"] == 1241010, refused.text
        assert (await http.put(BLOBS + "bundle", content=b"x")).status_code == 401
    # nothing of the refused bodies was kept
    stored = await blobs.get_many(mine)
    assert all(b.state != "complete" for b in stored.values())
    assert not list(blobs.root.glob("*.part"))


async def test_bundle_download_refuses_incomplete_or_unknown_files_and_bad_lists(
    running: Running,
) -> None:
    hosts = await _hosts(running)
    blobs = running.server.services.blobs
    done = await blobs.create(name="a", kind="agent", writer_host_id=hosts["127.0.0.2"])
    await blobs.store_bytes(done, b"abc")
    waiting = await blobs.create(name="b", kind="agent", writer_host_id=hosts["127.0.0.2"])
    await blobs.allow_readers([done, waiting], [hosts["127.0.0.3"]])
    target = agent_headers(running, "127.0.0.3")
    async with running.agent_http() as http:
        ok = await http.post(BLOBS + "bundle", json={"blobs": [done]}, headers=target)
        assert ok.content == b"abc"
        incomplete = await http.post(BLOBS + "bundle", json={"blobs": [done, waiting]},
                                     headers=target)
        assert incomplete.status_code == 409
        unknown = await http.post(BLOBS + "bundle", json={"blobs": [done, "f" * 32]},
                                  headers=target)
        assert unknown.status_code == 403
        for bad in ({"blobs": []}, {"blobs": [done, done]}, {"blobs": "x"}, [done],
                    {"blobs": ["x"] * 513}, {"blobs": [7]}):
            refused = await http.post(BLOBS + "bundle", json=bad, headers=target)
            assert refused.status_code == 400, (bad, refused.text)
        huge = await http.post(BLOBS + "bundle", content=b"[" + b" " * 70_000 + b"]",
                               headers=target)
        assert huge.status_code == 413


async def test_a_tree_of_small_files_moves_in_few_requests_and_a_bad_target_fails_alone(
    running: Running, tmp_path: Path
) -> None:
    """300 small files and one large one to two targets: the small ones travel in a
    bundle each way, the large one alone; a directory in the way of one file on the
    targets fails that file (and so the host) and no other."""
    await running.start_agents(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    src = tmp_path / "src" / "tree"
    expected: dict[str, bytes] = {}
    for n in range(300):
        rel = f"d{n % 4}/f{n:03d}.conf"
        expected[rel] = f"line {n}\n".encode() * (n % 9 + 1)
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(expected[rel])
        path.chmod(0o640 if n % 2 else 0o644)
    expected["big.bin"] = os.urandom(2 * 1024 * 1024 + 5)
    (src / "big.bin").write_bytes(expected["big.bin"])
    dest = tmp_path / "dest"
    (dest / "tree" / "d1" / "f001.conf").mkdir(parents=True)
    blobs = running.server.services.blobs
    counts = {"receive": 0, "may_read": 0}

    def counted(name: str, fn: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return await fn(*args, **kwargs)
        return call

    # counted, not replaced: every call goes on to the real store
    blobs.receive = counted("receive", blobs.receive)  # type: ignore[method-assign]
    blobs.may_read = counted("may_read", blobs.may_read)  # type: ignore[method-assign]
    sub, data = await run_transfer(running, transfer_body(
        [f"{src}/"], ["127.0.0.2"], ["127.0.0.3", "127.0.0.4"], f"{dest}/"))
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert {r["status"] for r in results} == {202}, results
    for rel, content in expected.items():
        if rel == "d1/f001.conf":
            continue
        path = dest / "tree" / rel
        assert path.read_bytes() == content, rel
        assert path.stat().st_mode & 0o777 == (src / rel).stat().st_mode & 0o777, rel
    # one request for the large file each way; the 299 others in bundles
    assert counts == {"receive": 1, "may_read": 2}, counts
    logs = await running.wire.v3("batch_get_job_instance_ip_log", {
        "bk_biz_id": 2, "job_instance_id": sub["job_instance_id"],
        "step_instance_id": sub["step_instance_id"],
        "ip_list": [{"ip": ip, "bk_cloud_id": 0} for ip in ("127.0.0.2", "127.0.0.3",
                                                             "127.0.0.4")]})
    by_ip = {h["ip"]: h["file_logs"] for h in logs["data"]["file_task_logs"]}
    uploads = [f for f in by_ip["127.0.0.2"] if f["mode"] == 0]
    assert len(uploads) == 301 and {f["status"] for f in uploads} == {4}
    for ip in ("127.0.0.3", "127.0.0.4"):
        files = [f for f in by_ip[ip] if f["mode"] == 1 and not f["dest_path"].endswith(
            ("/tree", "/d0", "/d1", "/d2", "/d3"))]
        failed = [f for f in files if f["status"] != 4]
        assert len(files) == 301 and len(failed) == 1, failed
        assert failed[0]["dest_path"].endswith("/d1/f001.conf")
        assert failed[0]["status"] == 5 and "is a directory" in failed[0]["log_content"]


async def test_the_file_task_limit_fails_the_step_before_anything_is_uploaded(
    running: Running, tmp_path: Path, monkeypatch: Any
) -> None:
    from jobfleet.engine import file_gathering

    await running.start_agents(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    src = tmp_path / "src"
    for n in range(8):
        (src / f"f{n}").parent.mkdir(parents=True, exist_ok=True)
        (src / f"f{n}").write_text(f"{n}\n")
    # 9 entries (the directory and its 8 files) to 2 hosts is over a limit of 10
    monkeypatch.setattr(file_gathering, "MAX_FILE_TASKS", 10)
    blobs = running.server.services.blobs
    received: list[str] = []
    real_many, real_one = blobs.receive_many, blobs.receive

    async def many(files: Any, chunks: Any) -> Any:
        received.extend(b for b, _ in files)
        return await real_many(files, chunks)

    async def one(blob_id: str, *args: Any, **kwargs: Any) -> Any:
        received.append(blob_id)
        return await real_one(blob_id, *args, **kwargs)

    # counted, not replaced: every call goes on to the real store
    blobs.receive_many = many  # type: ignore[method-assign]
    blobs.receive = one  # type: ignore[method-assign]
    _, data = await run_transfer(running, transfer_body(
        [f"{src}/"], ["127.0.0.2"], ["127.0.0.3", "127.0.0.4"], f"{tmp_path}/dest/"))
    results = data["step_instance_list"][0]["step_ip_result_list"]
    assert {r["status"] for r in results} == {329}, results
    assert received == [] and not (tmp_path / "dest").exists()
