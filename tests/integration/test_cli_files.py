"""``jobfleet push`` / ``fetch`` and the SDK's file calls against a real server and agents.

Every agent of the test runs on this machine, so all "hosts" share one file system:
targets write the same paths, sources read the same files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest
from tests.integration.harness import Running
from tests.integration.test_cli_and_sdk import cli

from jobfleet.sdk import AsyncJobClient, FileLogMode, JobApiError, JobClient, TransferProgress

# a client of the API, whose own tests run on every backend
pytestmark = pytest.mark.one_backend

IPS = ["127.0.0.2", "127.0.0.3"]


def sdk_args(running: Running) -> tuple[str, str, str, str]:
    boot = running.boot
    return running.url, boot["bk_app_code"], boot["bk_app_secret"], "admin"


async def test_push_two_files_to_two_hosts(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(20 * 1024 * 1024 + 3)
    (src / "big.bin").write_bytes(big)
    (src / "app.conf").write_text("port = 80\n")
    dest = tmp_path / "dest" / "new"
    code, out = await cli(
        running, "push", str(src / "big.bin"), str(src / "app.conf"),
        "--host", IPS[0], "--host", IPS[1], "--to", str(dest), "--poll-interval", "0.1")
    assert code == 0, out
    assert hashlib.sha256((dest / "big.bin").read_bytes()).digest() == hashlib.sha256(big).digest()
    assert (dest / "app.conf").read_text() == "port = 80\n"
    cells = [[c.strip() for c in line.split("│")] for line in out.splitlines() if "│" in line]
    rows = {row[1]: row for row in cells}
    assert set(rows) == set(IPS), out
    for ip in IPS:
        # status, ip, files written, bytes, speed, error
        assert rows[ip][:4] == ["Success", ip, "2/2", "20.0 MB"], out
        assert rows[ip][4].endswith("/s") and rows[ip][5] == "", out
    assert "succeeded · 2/2 hosts done" in out and "40.0 MB written" in out


async def test_push_into_a_missing_dir_in_strict_mode_fails(running: Running,
                                                            tmp_path: Path) -> None:
    await running.start_agents(IPS[:1])
    (tmp_path / "f.txt").write_text("x\n")
    absent = tmp_path / "absent"
    code, out = await cli(running, "push", str(tmp_path / "f.txt"), "--host", IPS[0],
                          "--to", str(absent), "--mode", "strict", "--json")
    assert code == 1, out
    result = json.loads(out)
    assert result["ok"] is False and not absent.exists()
    host = result["hosts"][0]
    assert host["status"] == 202 and host["file_logs"][0]["status"] == 5
    code, out = await cli(running, "push", str(tmp_path / "f.txt"), "--host", IPS[0],
                          "--to", str(absent), "--mode", "strict")
    assert code == 1 and "File transfer failed" in out and "0/1" in out


async def test_fetch_from_two_hosts(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    log = tmp_path / "var" / "app.log"
    log.parent.mkdir()
    log.write_bytes(b"line 1\nline 2\n")
    out_dir = tmp_path / "out"
    code, out = await cli(running, "fetch", "--host", IPS[0], "--host", IPS[1], str(log),
                          "--to", str(out_dir))
    assert code == 0, out
    for ip in IPS:
        assert (out_dir / f"0_{ip}" / "app.log").read_bytes() == b"line 1\nline 2\n"
        assert ip in out
    assert sorted(p.name for p in out_dir.iterdir()) == [f"0_{ip}" for ip in IPS]
    # a missing file fails the host: exit 1, nothing saved for it
    code, out = await cli(running, "fetch", "--host", IPS[0], str(tmp_path / "nope.log"),
                          "--to", str(tmp_path / "out2"))
    assert code == 1 and "source files missing" in out, out
    assert not (tmp_path / "out2").exists()
    # the failed host's row names it, in the table and in JSON
    row = next(line for line in out.splitlines() if "source files missing" in line)
    assert [c.strip() for c in row.split("│")][:2] == ["failed", IPS[0]], out
    code, out = await cli(running, "fetch", "--host", IPS[0], str(tmp_path / "nope.log"),
                          "--to", str(tmp_path / "out2"), "--json")
    files = json.loads(out)["files"]
    assert [(f["ip"], f["bk_cloud_id"], f["state"]) for f in files] == [(IPS[0], 0, "failed")]


async def test_sdk_transfer_upload_and_download(running: Running, tmp_path: Path) -> None:
    await running.start_agents(IPS)
    local = tmp_path / "pkg.bin"
    payload = os.urandom(3 * 1024 * 1024)
    local.write_bytes(payload)
    remote = tmp_path / "remote.txt"
    remote.write_text("from a host\n")
    progress: list[TransferProgress] = []
    uploaded: list[tuple[int, int]] = []
    async with AsyncJobClient(*sdk_args(running), biz=2) as client:
        result = await client.transfer_and_wait(
            [local], remote_files=[([str(remote)], [IPS[0]])], hosts=IPS,
            target_path=f"{tmp_path}/out/", poll_interval=0.1, on_progress=progress.append,
            on_upload=lambda sent, total: uploaded.append((sent, total)))
    assert result.ok, result
    assert (tmp_path / "out" / "pkg.bin").read_bytes() == payload
    assert (tmp_path / "out" / "remote.txt").read_text() == "from a host\n"
    assert uploaded[-1] == (len(payload), len(payload))
    assert result.uploads[0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert {f.src_path for f in result.source_logs} == {str(remote)}
    for host in result.hosts:
        writes = [f for f in host.file_logs if f.mode == FileLogMode.DOWNLOAD]
        assert host.succeeded and len(writes) == 2 and all(f.succeeded for f in writes)
    # the source host's own row, beside its writes
    source = next(h for h in result.hosts if h.ip == IPS[0])
    assert [f.mode for f in source.file_logs].count(FileLogMode.UPLOAD) == 1
    assert progress[-1].finished and progress[-1].done == 2
    assert progress[-1].bytes_done == progress[-1].bytes_total >= len(payload) * 2

    def sync_side() -> None:
        with JobClient(*sdk_args(running), biz=2) as client:
            got: list[int] = []
            client.download_file(result.uploads[0]["file_id"], tmp_path / "back.bin",
                                 on_progress=got.append)
            assert (tmp_path / "back.bin").read_bytes() == payload and got[-1] == len(payload)
            # beside the file: nothing left over from the temporary copy
            assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
            with pytest.raises(JobApiError) as info:
                client.download_file("no-such-file", tmp_path / "never.bin")
            assert info.value.http_status == 404 and not (tmp_path / "never.bin").exists()
            running.server.services.limits.max_file_size = 1024 * 1024
            with pytest.raises(JobApiError) as info:
                client.upload_file(local)
            assert info.value.http_status == 413 and info.value.code == 1241010

    await asyncio.to_thread(sync_side)
