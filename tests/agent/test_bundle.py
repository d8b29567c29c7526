"""Many small files in one request on the target side (``agent.files.bundle``), against a
real loopback HTTP server."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from jobfleet.agent.files import TEMP_MARK
from jobfleet.agent.files.bundle import GROUP_FILES, Wanted, fetch_bundle
from jobfleet.agent.transfers import FileWork
from jobfleet.domain import protocol
from jobfleet.domain.protocol import DownloadItem, FileItem
from jobfleet.domain.status import HostStatus

pytestmark = pytest.mark.timeout(60)
ACCOUNT = __import__("pwd").getpwuid(os.geteuid()).pw_name
URL = "/api/jobfleet/v1/agents/blobs/bundle"


@dataclass
class Bundles:
    """Serves the bytes of the blobs asked for, one after another."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    tamper: set[str] = field(default_factory=set)
    cut_after: int | None = None
    status: int = 200
    asked: list[list[str]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        ids = json.loads(await request.body())["blobs"]
        self.asked.append(ids)
        if self.status != 200:
            return PlainTextResponse("no", status_code=self.status)
        body = b"".join(
            (bytes([self.blobs[b][0] ^ 0xFF]) + self.blobs[b][1:]) if b in self.tamper
            else self.blobs[b] for b in ids)
        cut = self.cut_after

        def chunks() -> Iterator[bytes]:
            if cut is None:
                yield body
                return
            yield body[:cut]
            raise ConnectionAbortedError("cut on purpose")

        return StreamingResponse(chunks(), headers={"Content-Length": str(len(body))})


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` served by a real uvicorn on a loopback port: its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="critical", http="h11")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not running.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        running.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server() -> Iterator[tuple[Bundles, str]]:
    bundles = Bundles()
    with serving(Starlette(routes=[Route(URL, bundles.handle, methods=["POST"])])) as base:
        yield bundles, base + URL


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


def wanted(bundles: Bundles, root: Path, count: int) -> list[Wanted]:
    out = []
    for n in range(count):
        data = f"file {n}\n".encode() * (n % 7 + 1)
        blob = f"b{n:04d}"
        bundles.blobs[blob] = data
        out.append(Wanted(n, blob, str(root / f"d{n % 3}" / f"f{n}.conf"), len(data),
                          hashlib.sha256(data).hexdigest(), 0o600 if n % 2 else 0o644))
    return out


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP_MARK in p.name]


async def test_every_file_placed_with_its_bytes_and_mode(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    files = wanted(bundles, tmp_path, GROUP_FILES * 2 + 5)
    outcomes = await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=True)
    assert outcomes == {f.n: None for f in files}
    for f in files:
        path = Path(f.dest)
        assert path.read_bytes() == bundles.blobs[f.blob]
        assert path.stat().st_mode & 0o777 == f.mode
    assert bundles.asked == [[f.blob for f in files]] and not temps(tmp_path)


async def test_a_file_whose_bytes_do_not_match_is_left_to_fetch_alone(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    files = wanted(bundles, tmp_path, 10)
    bundles.tamper = {files[4].blob}
    outcomes = await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=True)
    assert set(outcomes) == {f.n for f in files} - {4}
    assert not Path(files[4].dest).exists() and not temps(tmp_path)
    assert Path(files[5].dest).read_bytes() == bundles.blobs[files[5].blob]


async def test_a_target_problem_fails_that_file_alone(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    files = wanted(bundles, tmp_path, 10)
    Path(files[2].dest).mkdir(parents=True)
    outcomes = await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=True)
    error = outcomes[2]
    assert error is not None and error.status == HostStatus.COPYFILE_FAILED
    assert "is a directory" in error.message
    assert all(outcomes[f.n] is None for f in files if f.n != 2)
    assert Path(files[2].dest).is_dir() and not temps(tmp_path)


async def test_a_stream_cut_short_places_what_arrived_and_leaves_the_rest(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    files = wanted(bundles, tmp_path, 10)
    bundles.cut_after = sum(f.size for f in files[:6]) + 3
    outcomes = await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=True)
    # what arrived whole and checked out is in place; the rest is for downloads of its own
    assert set(outcomes) <= {f.n for f in files[:6]}
    assert all(v is None for v in outcomes.values())
    for f in files[6:]:
        assert not Path(f.dest).exists()
    assert not temps(tmp_path)


async def test_a_refused_bundle_places_nothing(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    files = wanted(bundles, tmp_path, 5)
    bundles.status = 409
    assert await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=True) == {}
    assert not any(Path(f.dest).exists() for f in files)


async def test_strict_mode_needs_each_files_directory(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    files = wanted(bundles, tmp_path, 6)
    (tmp_path / "d0").mkdir()
    outcomes = await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=False)
    for f in files:
        error = outcomes[f.n]
        if "/d0/" in f.dest:
            assert error is None and Path(f.dest).exists()
        else:
            assert error is not None and error.status == HostStatus.COPYFILE_FAILED


# --- a download task through FileWork: bundles, fallbacks, order ---------------------


@dataclass
class BlobServer:
    """Bundles on POST, single files on GET; the first bundle may be cut short."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    cut_first_after: int | None = None
    bundles_asked: int = 0
    singles_asked: list[str] = field(default_factory=list)

    async def bundle(self, request: Request) -> Response:
        ids = json.loads(await request.body())["blobs"]
        self.bundles_asked += 1
        body = b"".join(self.blobs[b] for b in ids)
        cut, self.cut_first_after = self.cut_first_after, None

        def chunks() -> Iterator[bytes]:
            if cut is None:
                yield body
                return
            yield body[:cut]
            raise ConnectionAbortedError("server went away")

        return StreamingResponse(chunks(), headers={"Content-Length": str(len(body))})

    async def single(self, request: Request) -> Response:
        blob = request.path_params["blob"]
        self.singles_asked.append(blob)
        return Response(self.blobs[blob], media_type="application/octet-stream")


@pytest.fixture
def blob_server() -> Iterator[tuple[BlobServer, str]]:
    blobs = BlobServer()
    base = "/api/jobfleet/v1/agents/blobs/"
    app = Starlette(routes=[Route(base + "bundle", blobs.bundle, methods=["POST"]),
                            Route(base + "{blob}", blobs.single, methods=["GET"])])
    with serving(app) as url:
        yield blobs, url


def item(blobs: BlobServer, n: int, dest: Path, data: bytes, **extra: Any) -> DownloadItem:
    blob = f"blob{n:04d}"
    blobs.blobs[blob] = data
    return {"n": n, "blob": blob, "dest": str(dest), "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "mode": 0o644, "is_dir": False,
            "src": "127.0.0.1:/src", **extra}  # type: ignore[typeddict-item]


async def run_task(url: str, items: list[DownloadItem], limit: int | None = None
                   ) -> tuple[int, list[FileItem], str]:
    work = FileWork(lambda: url, dict, lambda: None)
    out: list[str] = []

    async def emit(text: str) -> None:
        out.append(text)

    try:
        task = protocol.download("t1", items=items, account=ACCOUNT, create_dirs=True,
                                 speed_limit=limit, timeout=60, max_size=None)
        result, finals = await work.download(task, emit, lambda _items: None)
    finally:
        await work.close()
    return result.status, finals, "".join(out)


async def test_a_bundle_cut_mid_stream_is_finished_file_by_file(
    blob_server: tuple[BlobServer, str], tmp_path: Path
) -> None:
    blobs, url = blob_server
    items: list[DownloadItem] = [{"n": 0, "blob": "", "dest": str(tmp_path / "t"), "size": 0,
                                  "sha256": None, "mode": 0o750, "is_dir": True, "src": "x"}]
    for n in range(1, 301):
        items.append(item(blobs, n, tmp_path / "t" / f"f{n}", f"{n}\n".encode() * 50))
    blobs.cut_first_after = 5000
    status, finals, log = await run_task(url, items)
    assert status == HostStatus.SUCCESS
    assert sorted(f["n"] for f in finals) == list(range(301))
    assert {f["status"] for f in finals} == {4}
    for it in items[1:]:
        assert Path(it["dest"]).read_bytes() == blobs.blobs[it["blob"]]
    # the files that did not arrive whole in the cut bundle came alone, each once
    assert blobs.bundles_asked == 1
    assert 0 < len(blobs.singles_asked) == len(set(blobs.singles_asked)) <= 300
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o750
    assert log.count(" bytes, ") == 300 and not temps(tmp_path)


async def test_a_repeated_destination_keeps_the_order_of_the_items(
    blob_server: tuple[BlobServer, str], tmp_path: Path
) -> None:
    blobs, url = blob_server
    dest = tmp_path / "same.conf"
    items = [item(blobs, n, dest, f"version {n}\n".encode()) for n in range(20)]
    status, _, _ = await run_task(url, items)
    assert status == HostStatus.SUCCESS and dest.read_bytes() == b"version 19\n"
    # one at a time, in order: no bundle
    assert blobs.bundles_asked == 0 and blobs.singles_asked == [i["blob"] for i in items]


async def test_the_first_failing_item_decides_the_host_status(
    blob_server: tuple[BlobServer, str], tmp_path: Path
) -> None:
    blobs, url = blob_server
    items = [item(blobs, n, tmp_path / f"f{n}", b"x" * n) for n in range(30)]
    (tmp_path / "f7").mkdir()  # 202 for item 7
    items[20]["sha256"] = "0" * 64  # a mismatch for item 20 (329), fetched alone too
    status, finals, _ = await run_task(url, items)
    assert status == HostStatus.COPYFILE_FAILED
    failed = {f["n"]: f for f in finals if f["status"] == 5}
    assert set(failed) == {7, 20} and "checksum mismatch" in str(failed[20].get("log"))
    assert blobs.singles_asked == ["blob0020"]


async def test_a_symlink_below_the_root_fails_that_file_alone(
    server: tuple[Bundles, str], client: httpx.AsyncClient, tmp_path: Path
) -> None:
    bundles, url = server
    outside = tmp_path / "outside"
    outside.mkdir()
    top = tmp_path / "top"
    files = [replace(f, root=str(top)) for f in wanted(bundles, top, 6)]
    top.mkdir()
    (top / "d1").symlink_to(outside)
    outcomes = await fetch_bundle(client, url, {}, files, account=ACCOUNT, create_dirs=True)
    for f in files:
        error = outcomes[f.n]
        if f.n % 3 == 1:
            assert error is not None and error.status == HostStatus.COPYFILE_FAILED
            assert f"{top / 'd1'} is a symbolic link" in error.message
        else:
            assert error is None and Path(f.dest).read_bytes() == bundles.blobs[f.blob]
    assert not list(outside.iterdir())
