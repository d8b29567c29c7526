"""File transfer on the host side, against real files and a real loopback HTTP server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import re
import resource
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from jobfleet.agent.accounts import AccountError
from jobfleet.agent.files import (
    TEMP_MARK,
    MissingSource,
    Progress,
    SourceFile,
    TransferError,
    download,
    expand_sources,
    make_dir,
    upload,
)
from jobfleet.agent.files.upload import open_source
from jobfleet.domain.status import HostStatus

SELF = pwd.getpwuid(os.geteuid()).pw_name
IS_ROOT = os.geteuid() == 0
AUTH = {"Authorization": "Agent agent-1:s3cret"}
BLOBS = "/api/jobfleet/v1/agents/blobs/"

pytestmark = pytest.mark.timeout(60)
needs_root = pytest.mark.skipif(not IS_ROOT, reason="acting for another account needs root")


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = _nobody()
needs_nobody = pytest.mark.skipif(NOBODY is None, reason="no 'nobody' account")


# --- a blob server: PUT stores the body, GET serves it with Range ----------------------


@dataclass
class BlobServer:
    root: Path
    base_url: str = ""
    # blob id -> serve these bytes differently
    tamper: set[str] = field(default_factory=set)
    # blob id -> close the connection after this many bytes, on the next N GETs
    cut_after: dict[str, int] = field(default_factory=dict)
    cuts_left: dict[str, int] = field(default_factory=dict)
    fail_with: dict[str, int] = field(default_factory=dict)
    ignore_range: set[str] = field(default_factory=set)
    # blob id -> sha256 the PUT answer claims, in jobfleet's envelope
    claim_sha: dict[str, str] = field(default_factory=dict)
    ranges_seen: dict[str, list[str | None]] = field(default_factory=dict)

    def url(self, blob_id: str) -> str:
        return f"{self.base_url}{BLOBS}{blob_id}"

    def stored(self, blob_id: str) -> bytes:
        return (self.root / blob_id).read_bytes()

    def put_blob(self, blob_id: str, data: bytes) -> None:
        (self.root / blob_id).write_bytes(data)

    async def handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != AUTH["Authorization"]:
            return PlainTextResponse("no", status_code=401)
        blob_id = request.path_params["blob_id"]
        if blob_id in self.fail_with:
            return PlainTextResponse("nope", status_code=self.fail_with[blob_id])
        path = self.root / blob_id
        if request.method == "PUT":
            sha = hashlib.sha256()
            with path.open("wb") as out:
                async for piece in request.stream():
                    out.write(piece)
                    sha.update(piece)
            stored = self.claim_sha.get(blob_id, sha.hexdigest())
            return JSONResponse({"result": True, "code": 0, "data": {"sha256": stored}})
        return self._get(request, blob_id, path)

    def _get(self, request: Request, blob_id: str, path: Path) -> Response:
        if not path.exists():
            return PlainTextResponse("no such blob", status_code=404)
        size = path.stat().st_size
        header = request.headers.get("range")
        self.ranges_seen.setdefault(blob_id, []).append(header)
        if blob_id in self.ignore_range:
            header = None
        start = 0
        if header:
            match = re.fullmatch(r"bytes=(\d+)-", header)
            assert match, header
            start = int(match.group(1))
        cut = None
        if self.cuts_left.get(blob_id, 0) > 0:
            self.cuts_left[blob_id] -= 1
            cut = self.cut_after[blob_id]
        tamper = blob_id in self.tamper

        def chunks() -> Iterator[bytes]:
            sent = 0
            with path.open("rb") as source:
                source.seek(start)
                while piece := source.read(256 * 1024):
                    if tamper and sent == 0:
                        piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
                    if cut is not None and sent + len(piece) > cut:
                        yield piece[: cut - sent]
                        raise ConnectionAbortedError("cut on purpose")
                    sent += len(piece)
                    yield piece

        headers = {"Content-Length": str(size - start)}
        status = 200
        if header:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        return StreamingResponse(chunks(), status_code=status, headers=headers)


@pytest.fixture(scope="module")
def blob_server() -> Iterator[BlobServer]:
    root = Path(tempfile.mkdtemp(prefix="jobfleet-blobs-"))
    blobs = BlobServer(root)
    app = Starlette(routes=[Route(BLOBS + "{blob_id}", blobs.handle, methods=["GET", "PUT"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    blobs.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, lifespan="off", log_level="critical", http="h11")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "blob server did not start"
        time.sleep(0.01)
    yield blobs
    server.should_exit = True
    thread.join(10)
    sock.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield http


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every account can reach (pytest's tmp_path sits under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="jobfleet-files-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def blob_id() -> str:
    return uuid.uuid4().hex


def write(path: Path, data: bytes | str = b"x", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        path.chmod(mode)
    return path


def rels(found: list[SourceFile]) -> list[str]:
    return [f.rel + ("/" if f.is_dir else "") for f in found]


def temp_files(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if TEMP_MARK in name]


# --- expand_sources -----------------------------------------------------------------


def test_plain_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a" / "app.conf", b"hello", mode=0o640)

    found, missing = expand_sources([str(path)], SELF)

    assert missing == []
    assert found == [SourceFile(str(path), "app.conf", 5, 0o640, False)]


@pytest.mark.parametrize("slash", ["", "/"])
def test_directory_is_copied_with_its_name(tmp_path: Path, slash: str) -> None:
    top = tmp_path / "app"
    write(top / "a.txt", b"aa")
    write(top / "sub" / "b.txt", b"bbb")
    write(top / "sub" / "deeper" / "c.txt")
    (top / "empty").mkdir()
    (top / "sub" / "also-empty").mkdir()

    found, missing = expand_sources([str(top) + slash], SELF)

    assert missing == []
    assert rels(found) == [
        "app/",
        "app/a.txt",
        "app/empty/",
        "app/sub/",
        "app/sub/also-empty/",
        "app/sub/b.txt",
        "app/sub/deeper/",
        "app/sub/deeper/c.txt",
    ]
    by_rel = {f.rel: f for f in found}
    assert by_rel["app/sub/b.txt"].size == 3
    assert by_rel["app/sub/b.txt"].path == str(top / "sub" / "b.txt")


def test_glob_matches_files_and_directories(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    for name in ("a.log", "b.log", "c.txt", "x1.log", ".hidden.log"):
        write(logs / name)
    write(logs / "old.log" / "inner.txt")

    found, missing = expand_sources([f"{logs}/*.log", f"{logs}/?.txt", f"{logs}/x[0-9].log"], SELF)

    assert missing == []
    assert rels(found) == [
        "a.log",
        "b.log",
        "old.log/",
        "old.log/inner.txt",
        "x1.log",
        "c.txt",
    ]


def test_glob_in_a_middle_component_keeps_the_path_below_it(tmp_path: Path) -> None:
    write(tmp_path / "srv" / "one" / "app.log")
    write(tmp_path / "srv" / "two" / "app.log")
    write(tmp_path / "srv" / "two" / "other.log")

    found, _ = expand_sources([f"{tmp_path}/srv/*/app.log"], SELF)

    assert rels(found) == ["one/app.log", "two/app.log"]


def test_a_glob_climbing_out_with_dot_dot_gives_names_inside_the_target(
    tmp_path: Path,
) -> None:
    write(tmp_path / "a" / "src" / "d" / "in.txt")
    write(tmp_path / "a" / "leak.txt")
    write(tmp_path / "a" / "conf" / "c.conf")

    found, missing = expand_sources(
        [f"{tmp_path}/a/src/*/../../leak.txt", f"{tmp_path}/a/src/*/../../conf"], SELF
    )

    assert not missing
    # a rel that climbs out would put the file outside the target directory
    assert rels(found) == ["leak.txt", "conf/", "conf/c.conf"]

    found, _ = expand_sources([f"{tmp_path}/a/src/*/.."], SELF)
    assert rels(found) == ["src/", "src/d/", "src/d/in.txt"]
    depth = len(tmp_path.parts)
    found, missing = expand_sources([f"{tmp_path}/*" + "/.." * depth], SELF)
    assert not found and missing  # never the whole file system


def test_a_name_that_is_not_utf8_is_missing_with_a_name_that_can_be_sent(
    tmp_path: Path,
) -> None:
    top = tmp_path / "odd"
    write(top / "good.txt")
    raw = os.fsencode(top)
    with open(os.path.join(raw, b"bad\xff.txt"), "wb") as f:
        f.write(b"x")
    os.makedirs(os.path.join(raw, b"dir\xfe", b"below"))

    found, missing = expand_sources([str(top), f"{top}/*.txt"], SELF)

    assert rels(found) == ["odd/", "odd/good.txt", "good.txt"]
    shown = sorted(f"{m} ({m.reason})" for m in missing)
    # sent to the server as JSON, which carries only valid UTF-8
    for line in shown:
        line.encode()
    assert shown == [
        f"{top}/bad\\xff.txt (the file name is not valid UTF-8)",
        f"{top}/bad\\xff.txt (the file name is not valid UTF-8)",
        f"{top}/dir\\xfe (the file name is not valid UTF-8)",
    ]


@needs_root
@needs_nobody
def test_set_id_bits_are_never_listed(tmp_path: Path) -> None:
    assert NOBODY is not None
    top = tmp_path / "bin"
    for name in ("mine", "theirs", "their_group"):
        write(top / name)
        os.chmod(top / name, 0o6755)
    # the copy is the target account's own: a set-ID bit would hand its identity to the
    # program, whoever owned it here
    os.chown(top / "theirs", NOBODY.pw_uid, 0)
    os.chown(top / "their_group", 0, NOBODY.pw_gid)
    for name in ("theirs", "their_group"):
        os.chmod(top / name, 0o6755)  # chown cleared the bits

    found, missing = expand_sources([str(top)], SELF)

    assert not missing
    modes = {f.rel: f.mode for f in found if not f.is_dir}
    assert modes == {"bin/mine": 0o755, "bin/theirs": 0o755, "bin/their_group": 0o755}


def test_regex_matches_names_in_one_directory(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    for name in ("abc.txt", "b.txt", "B.txt", "abc.txt.bak", "1.txt"):
        write(logs / name)
    write(logs / "dir.txt" / "inside.bin")  # a matched directory is copied whole
    write(logs / "sub" / "nested.txt")  # never looked into: "sub" does not match

    found, missing = expand_sources([f"{logs}/REGEX:[a-z]*\\.txt"], SELF)

    assert missing == []
    assert rels(found) == ["abc.txt", "b.txt", "dir.txt/", "dir.txt/inside.bin"]


def test_missing_patterns_come_back_as_written_with_a_reason(tmp_path: Path) -> None:
    write(tmp_path / "present.txt")
    patterns = [
        str(tmp_path / "absent.txt"),
        f"{tmp_path}/*.nothing",
        f"{tmp_path}/REGEX:zzz.*",
        f"{tmp_path}/REGEX:([unclosed",
        "relative/path.txt",
        str(tmp_path / "present.txt"),
    ]

    found, missing = expand_sources(patterns, SELF)

    assert rels(found) == ["present.txt"]
    assert missing == patterns[:5]
    reasons = [m.reason for m in missing if isinstance(m, MissingSource)]
    assert len(reasons) == 5
    assert "no such file" in reasons[0]
    assert "no match" in reasons[1]
    assert "invalid regular expression" in reasons[3]
    assert "absolute" in reasons[4]


def test_symlinks_followed_when_named_never_into_directories_inside_a_walk(
    tmp_path: Path,
) -> None:
    real = write(tmp_path / "real.txt", b"real")
    real_dir = tmp_path / "real-dir"
    write(real_dir / "f.txt")
    tree = tmp_path / "tree"
    write(tree / "plain.txt")
    (tree / "loop").symlink_to(tree)  # would recurse forever if followed
    (tree / "up").symlink_to("..")
    (tree / "file-link").symlink_to(real)
    (tree / "dangling").symlink_to(tmp_path / "gone")
    os.mkfifo(tree / "fifo")
    (tmp_path / "named-link").symlink_to(real)
    (tmp_path / "dir-link").symlink_to(real_dir)

    found, missing = expand_sources(
        [str(tree), str(tmp_path / "named-link"), str(tmp_path / "dir-link")], SELF
    )

    assert missing == []
    assert rels(found) == [
        "tree/",
        "tree/file-link",
        "tree/plain.txt",
        "named-link",
        "dir-link/",
        "dir-link/f.txt",
    ]
    assert {f.rel: f.size for f in found}["tree/file-link"] == 4


def test_special_file_named_explicitly_is_missing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    found, missing = expand_sources([str(tmp_path / "fifo")], SELF)
    assert found == []
    assert isinstance(missing[0], MissingSource)
    assert "not a regular file" in missing[0].reason


def test_a_fifo_swapped_in_after_listing_is_refused_without_waiting(tmp_path: Path) -> None:
    source = write(tmp_path / "f.bin", b"listed as a file")
    found, _missing = expand_sources([str(source)], SELF)
    assert [f.rel for f in found] == ["f.bin"]
    source.unlink()
    os.mkfifo(source)  # no writer will ever come

    outcome: list[BaseException] = []

    def open_it() -> None:
        try:
            open_source(str(source), None)
        except BaseException as exc:
            outcome.append(exc)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(10)
    if opener.is_alive():
        # release the thread the test would otherwise leave behind
        os.close(os.open(source, os.O_WRONLY | os.O_NONBLOCK))
        opener.join(5)
        pytest.fail("opening a FIFO source held its thread until a writer came")
    assert isinstance(outcome[0], TransferError)
    assert outcome[0].status == HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST
    assert "not a regular file" in outcome[0].message


@needs_nobody
def test_non_root_agent_cannot_list_as_another_account(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NOBODY is not None
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY.pw_uid)
    with pytest.raises(AccountError) as caught:
        expand_sources(["/etc/hostname"], "root")
    assert caught.value.status == HostStatus.GSE_USER_ERROR


@needs_root
def test_unknown_account_is_an_account_error() -> None:
    with pytest.raises(AccountError):
        expand_sources(["/etc/hostname"], "no-such-user-jf")


@needs_root
@needs_nobody
def test_listing_uses_the_source_accounts_rights(open_dir: Path) -> None:
    readable = write(open_dir / "pub" / "ok.txt", mode=0o644)
    secret = write(open_dir / "pub" / "secret.txt", mode=0o600)
    write(open_dir / "pub" / "locked" / "x.txt", mode=0o644)
    (open_dir / "pub" / "locked").chmod(0o700)
    write(open_dir / "hidden" / "y.txt", mode=0o644)
    (open_dir / "hidden").chmod(0o711)  # searchable, not listable

    found, missing = expand_sources(
        [
            str(open_dir / "pub"),
            str(secret),
            str(open_dir / "hidden" / "y.txt"),
            f"{open_dir}/hidden/*.txt",
        ],
        "nobody",
    )

    assert rels(found) == ["pub/", "pub/ok.txt", "y.txt"]
    assert found[1].path == str(readable)
    assert missing == [
        str(open_dir / "pub" / "locked"),
        str(secret),
        str(secret),
        f"{open_dir}/hidden/*.txt",
    ]
    assert all("permission denied" in m.reason for m in missing if isinstance(m, MissingSource))
    # root itself reads all of it
    found_as_root, missing_as_root = expand_sources([str(open_dir / "pub")], "root")
    assert missing_as_root == []
    assert len(found_as_root) == 5


# --- upload and download ------------------------------------------------------------


@dataclass
class Fetch:
    """download() from the test server, of a blob expected to hold ``data``."""

    client: httpx.AsyncClient
    server: BlobServer

    async def __call__(
        self,
        blob: str,
        dest: Path,
        data: bytes,
        *,
        account: str = SELF,
        create_dirs: bool = False,
        mode: int = 0o644,
        speed_limit: int | None = None,
        chunk_size: int = 1 << 20,
        max_size: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        await download(
            self.client,
            self.server.url(blob),
            AUTH,
            str(dest),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            mode=mode,
            account=account,
            create_dirs=create_dirs,
            speed_limit=speed_limit,
            on_progress=on_progress,
            chunk_size=chunk_size,
            max_size=max_size,
        )


@pytest.fixture
def fetch(client: httpx.AsyncClient, blob_server: BlobServer) -> Fetch:
    return Fetch(client, blob_server)


async def test_round_trip_keeps_bytes_mode_and_checksum(
    blob_server: BlobServer, client: httpx.AsyncClient, fetch: Fetch, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    source = write(tmp_path / "src" / "data.bin", data, mode=0o751)
    blob = blob_id()
    up: list[Progress] = []

    size, digest = await upload(
        client,
        blob_server.url(blob),
        AUTH,
        str(source),
        speed_limit=None,
        on_progress=up.append,
        account=SELF,
    )

    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert blob_server.stored(blob) == data
    assert up[-1].done == up[-1].total == len(data)

    dest = tmp_path / "dst" / "data.bin"
    dest.parent.mkdir()
    down: list[Progress] = []
    await fetch(blob, dest, data, mode=0o751, on_progress=down.append)

    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o751
    assert down[-1].done == len(data)
    assert temp_files(dest.parent) == []


async def test_set_id_bits_it_is_told_to_give_are_not_given(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    # a server of an earlier release passes on what a hostile source listed
    blob = blob_id()
    blob_server.put_blob(blob, b"#!/bin/sh\n")
    for mode, kept in ((0o6755, 0o755), (0o4777, 0o777), (0o1644, 0o644)):
        await fetch(blob, tmp_path / "tool", b"#!/bin/sh\n", mode=mode)
        assert oct(stat.S_IMODE((tmp_path / "tool").stat().st_mode)) == oct(kept)


async def test_empty_file_round_trip(
    blob_server: BlobServer, client: httpx.AsyncClient, fetch: Fetch, tmp_path: Path
) -> None:
    source = write(tmp_path / "empty", b"")
    blob = blob_id()
    size, _ = await upload(client, blob_server.url(blob), AUTH, str(source), speed_limit=None)
    assert size == 0
    await fetch(blob, tmp_path / "copy", b"")
    assert (tmp_path / "copy").read_bytes() == b""


async def test_strict_mode_needs_the_directory_force_creates_it(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    blob = blob_id()
    blob_server.put_blob(blob, b"payload")
    dest = tmp_path / "new" / "deeper" / "f.txt"

    with pytest.raises(TransferError) as caught:
        await fetch(blob, dest, b"payload", create_dirs=False)
    assert caught.value.status == HostStatus.COPYFILE_FAILED
    assert caught.value.message == f"target directory {dest.parent} does not exist"
    assert not (tmp_path / "new").exists()

    await fetch(blob, dest, b"payload", create_dirs=True)
    assert dest.read_bytes() == b"payload"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755 & ~umask


async def test_checksum_mismatch_never_replaces_a_good_file(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    data = os.urandom(600_000)
    blob = blob_id()
    blob_server.put_blob(blob, data)
    blob_server.tamper.add(blob)
    dest = write(tmp_path / "good.bin", b"the good old file")

    with pytest.raises(TransferError) as caught:
        await fetch(blob, dest, data)

    assert caught.value.status == HostStatus.GSE_FILE_TASK_ERROR
    assert "checksum mismatch" in caught.value.message
    assert dest.read_bytes() == b"the good old file"
    assert temp_files(tmp_path) == []


async def test_target_that_is_a_directory_is_refused(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    blob = blob_id()
    blob_server.put_blob(blob, b"x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(TransferError) as caught:
        await fetch(blob, tmp_path / "taken", b"x")
    assert caught.value.status == HostStatus.COPYFILE_FAILED
    assert "is a directory" in caught.value.message


async def test_http_failure_is_fetch_failed_and_leaves_nothing(
    fetch: Fetch, tmp_path: Path
) -> None:
    with pytest.raises(TransferError) as caught:
        await fetch(blob_id(), tmp_path / "never.bin", b"x")
    assert caught.value.status == HostStatus.GSE_FILE_ERROR
    assert "HTTP 404" in caught.value.message
    assert os.listdir(tmp_path) == []


async def test_resumes_once_after_a_dropped_connection(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    blob = blob_id()
    blob_server.put_blob(blob, data)
    blob_server.cut_after[blob] = 700_000
    blob_server.cuts_left[blob] = 1
    dest = tmp_path / "resumed.bin"

    await fetch(blob, dest, data, chunk_size=64 * 1024)

    assert dest.read_bytes() == data
    first, second = blob_server.ranges_seen[blob]
    assert first is None
    assert second is not None
    assert 0 < int(second.removeprefix("bytes=").rstrip("-")) <= 700_000

    # dropped twice: the one resume is spent, the download fails and leaves nothing
    blob_server.cuts_left[blob] = 2
    other = tmp_path / "twice.bin"
    with pytest.raises(TransferError) as caught:
        await fetch(blob, other, data)
    assert caught.value.status == HostStatus.GSE_FILE_ERROR
    assert temp_files(tmp_path) == []
    assert not other.exists()


async def test_resume_starts_over_when_the_server_ignores_the_range(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    data = os.urandom(1024 * 1024)
    blob = blob_id()
    blob_server.put_blob(blob, data)
    blob_server.cut_after[blob] = 300_000
    blob_server.cuts_left[blob] = 1
    blob_server.ignore_range.add(blob)
    dest = tmp_path / "again.bin"

    await fetch(blob, dest, data, chunk_size=64 * 1024)

    assert dest.read_bytes() == data
    assert len(blob_server.ranges_seen[blob]) == 2


async def test_cancelled_download_leaves_no_temp_file(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    blob = blob_id()
    blob_server.put_blob(blob, data)
    dest = write(tmp_path / "keep.bin", b"old")
    task = asyncio.create_task(fetch(blob, dest, data, speed_limit=1024 * 1024))
    await asyncio.sleep(0.3)
    assert temp_files(tmp_path) != []

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert temp_files(tmp_path) == []
    assert dest.read_bytes() == b"old"


def slow_target_opens(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make creating a download's temporary file take 0.3 s; the events say when it
    began and when it ended."""
    module = sys.modules["jobfleet.agent.files.download"]
    opening, opened = threading.Event(), threading.Event()
    real = module._open_target

    def slow_open(dest: str, account: str, create_dirs: bool, root: str | None = None) -> object:
        opening.set()
        time.sleep(0.3)
        try:
            return real(dest, account, create_dirs, root)
        finally:
            opened.set()

    monkeypatch.setattr(module, "_open_target", slow_open)
    return opening, opened


async def cancel_while_opening(
    task: asyncio.Task[object], opening: threading.Event, opened: threading.Event
) -> None:
    """Cancel ``task`` while its file is being created, then let the file thread finish."""
    while not opening.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(opened.wait, 5)
    await asyncio.sleep(0.2)


async def test_a_download_cancelled_while_its_file_is_opened_leaves_nothing(
    blob_server: BlobServer, fetch: Fetch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill that lands while the temporary file is being made (a slow file system):
    the file is removed and its descriptor closed once the file thread is done with it."""
    data = os.urandom(1024)
    blob = blob_id()
    blob_server.put_blob(blob, data)
    opening, opened = slow_target_opens(monkeypatch)
    fds = len(os.listdir("/proc/self/fd"))
    task = asyncio.create_task(fetch(blob, tmp_path / "new.bin", data))
    await cancel_while_opening(task, opening, opened)

    assert temp_files(tmp_path) == []
    assert not (tmp_path / "new.bin").exists()
    assert len(os.listdir("/proc/self/fd")) == fds


async def test_source_that_shrinks_while_sent_fails_the_upload(
    blob_server: BlobServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    source = write(tmp_path / "shrinking.log", os.urandom(1024 * 1024))

    async def truncate_soon() -> None:
        await asyncio.sleep(0.2)
        os.truncate(source, 1000)

    truncating = asyncio.create_task(truncate_soon())
    with pytest.raises(TransferError) as caught:
        await upload(
            client,
            blob_server.url(blob_id()),
            AUTH,
            str(source),
            speed_limit=1024 * 1024,
            chunk_size=64 * 1024,
        )
    await truncating
    assert caught.value.status == HostStatus.GSE_FILE_TASK_ERROR
    assert "shrank" in caught.value.message


async def test_size_limits(
    blob_server: BlobServer, client: httpx.AsyncClient, fetch: Fetch, tmp_path: Path
) -> None:
    source = write(tmp_path / "big", b"x" * 1000)
    with pytest.raises(TransferError) as up:
        await upload(
            client, blob_server.url(blob_id()), AUTH, str(source), speed_limit=None, max_size=999
        )
    assert up.value.status == HostStatus.GSE_FILE_SIZE_EXCEED
    with pytest.raises(TransferError) as down:
        await fetch(blob_id(), tmp_path / "d", b"x" * 1000, max_size=999)
    assert down.value.status == HostStatus.GSE_FILE_SIZE_EXCEED


async def test_upload_failures(
    blob_server: BlobServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    with pytest.raises(TransferError) as gone:
        await upload(
            client, blob_server.url(blob_id()), AUTH, str(tmp_path / "gone"), speed_limit=None
        )
    assert gone.value.status == HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST

    source = write(tmp_path / "f", b"abc")
    altered = blob_id()
    blob_server.claim_sha[altered] = hashlib.sha256(b"abd").hexdigest()
    with pytest.raises(TransferError) as mismatch:
        await upload(client, blob_server.url(altered), AUTH, str(source), speed_limit=None)
    assert mismatch.value.status == HostStatus.GSE_FILE_TASK_ERROR
    assert "checksum mismatch" in mismatch.value.message

    refused = blob_id()
    blob_server.fail_with[refused] = 500
    with pytest.raises(TransferError) as failed:
        await upload(client, blob_server.url(refused), AUTH, str(source), speed_limit=None)
    assert failed.value.status == HostStatus.GSE_FILE_TASK_ERROR
    assert "HTTP 500" in failed.value.message


async def test_speed_limit_slows_both_directions(
    blob_server: BlobServer, client: httpx.AsyncClient, fetch: Fetch, tmp_path: Path
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    source = write(tmp_path / "four.bin", data)
    limit = 4 * 1024 * 1024

    started = time.monotonic()
    blob = blob_id()
    await upload(client, blob_server.url(blob), AUTH, str(source), speed_limit=None)
    unlimited = time.monotonic() - started

    reports: list[Progress] = []
    started = time.monotonic()
    await upload(
        client,
        blob_server.url(blob_id()),
        AUTH,
        str(source),
        speed_limit=limit,
        on_progress=reports.append,
    )
    limited_up = time.monotonic() - started

    started = time.monotonic()
    await fetch(blob, tmp_path / "copy.bin", data, speed_limit=limit)
    limited_down = time.monotonic() - started

    assert unlimited < 0.5
    assert 0.85 <= limited_up < 2.0
    assert 0.8 <= limited_down < 2.0
    # at most ~4 reports a second, plus the final one; speeds near the limit
    assert 2 <= len(reports) <= 6
    assert all(0.5 * limit < r.bytes_per_second < 1.5 * limit for r in reports[1:])


async def test_memory_stays_bounded_and_the_loop_free_for_a_256_mib_file(
    blob_server: BlobServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    block = os.urandom(1 << 20)
    source = tmp_path / "huge.bin"
    expected = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(256):
            out.write(block)
            expected.update(block)
    size = 256 << 20
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    lag = 0.0
    stop = asyncio.Event()

    async def watch_loop() -> None:
        nonlocal lag
        while not stop.is_set():
            tick = time.monotonic()
            await asyncio.sleep(0.01)
            lag = max(lag, time.monotonic() - tick - 0.01)

    watcher = asyncio.create_task(watch_loop())
    blob = blob_id()
    sent, digest = await upload(client, blob_server.url(blob), AUTH, str(source), speed_limit=None)
    dest = tmp_path / "huge.copy"
    await download(
        client,
        blob_server.url(blob),
        AUTH,
        str(dest),
        size=size,
        sha256=digest,
        mode=0o600,
        account=SELF,
        create_dirs=False,
        speed_limit=None,
    )
    stop.set()
    await watcher

    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    assert (sent, digest) == (size, expected.hexdigest())
    assert dest.stat().st_size == size
    assert growth_mib < 100, growth_mib
    # hashing and copying 256 MiB inline would hold the loop for seconds; a loaded CI
    # machine has stretched one 10 ms sleep past 0.2 s, so the bound is loose
    assert lag < 1.0, lag


# --- accounts on the target side ----------------------------------------------------


@needs_root
@needs_nobody
async def test_other_account_without_write_permission_is_refused(
    blob_server: BlobServer, fetch: Fetch, open_dir: Path
) -> None:
    blob = blob_id()
    blob_server.put_blob(blob, b"data")
    root_only = open_dir / "root-only"
    root_only.mkdir(mode=0o755)

    with pytest.raises(TransferError) as caught:
        await fetch(blob, root_only / "f", b"data", account="nobody")
    assert caught.value.status == HostStatus.COPYFILE_FAILED
    assert "permission denied" in caught.value.message
    assert os.listdir(root_only) == []

    # force mode may not create directories where the account could not either
    with pytest.raises(TransferError) as nested:
        await fetch(blob, root_only / "a" / "f", b"data", account="nobody", create_dirs=True)
    assert "permission denied" in nested.value.message
    assert os.listdir(root_only) == []

    # a sticky directory: the account may create files but not replace root's
    sticky = open_dir / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    write(sticky / "roots.txt", b"root's")
    with pytest.raises(TransferError):
        await fetch(blob, sticky / "roots.txt", b"data", account="nobody")
    assert (sticky / "roots.txt").read_bytes() == b"root's"
    await fetch(blob, sticky / "mine.txt", b"data", account="nobody")

    # judged on the directory actually opened, wherever a symlink on the way points
    (open_dir / "link").symlink_to(root_only)
    with pytest.raises(TransferError) as linked:
        await fetch(blob, open_dir / "link" / "f", b"data", account="nobody")
    assert "permission denied" in linked.value.message

    with pytest.raises(TransferError) as made:
        make_dir(str(root_only / "d"), mode=0o755, account="nobody", create_dirs=False)
    assert made.value.status == HostStatus.COPYFILE_FAILED
    assert os.listdir(root_only) == []


@needs_root
@needs_nobody
async def test_upload_reads_with_the_source_accounts_rights(
    blob_server: BlobServer, client: httpx.AsyncClient, open_dir: Path
) -> None:
    secret = write(open_dir / "secret", b"root only", mode=0o600)
    with pytest.raises(TransferError) as caught:
        await upload(
            client,
            blob_server.url(blob_id()),
            AUTH,
            str(secret),
            speed_limit=None,
            account="nobody",
        )
    assert caught.value.status == HostStatus.COPYFILE_SOURCE_FILE_NOT_EXIST
    assert "permission denied" in caught.value.message

    public = write(open_dir / "public", b"anyone", mode=0o644)
    size, _ = await upload(
        client, blob_server.url(blob_id()), AUTH, str(public), speed_limit=None, account="nobody"
    )
    assert size == 6


@needs_root
@needs_nobody
async def test_files_and_directories_belong_to_the_account(
    blob_server: BlobServer, fetch: Fetch, open_dir: Path
) -> None:
    assert NOBODY is not None
    blob = blob_id()
    blob_server.put_blob(blob, b"data")
    home = open_dir / "nobody-home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    dest = home / "new" / "f.txt"

    await fetch(blob, dest, b"data", mode=0o640, account="nobody", create_dirs=True)

    for path in (dest, dest.parent):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640

    make_dir(str(home / "made"), mode=0o750, account="nobody", create_dirs=False)
    st = (home / "made").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY.pw_uid, 0o750)


@needs_root
async def test_unknown_target_account_is_status_311(fetch: Fetch, tmp_path: Path) -> None:
    with pytest.raises(TransferError) as caught:
        await fetch(blob_id(), tmp_path / "f", b"x", account="no-such-user-jf")
    assert caught.value.status == HostStatus.GSE_USER_ERROR


def test_make_dir_strict_force_and_conflicts(tmp_path: Path) -> None:
    with pytest.raises(TransferError) as strict:
        make_dir(str(tmp_path / "a" / "b"), mode=0o755, account=SELF, create_dirs=False)
    assert strict.value.message == f"target directory {tmp_path / 'a'} does not exist"

    make_dir(str(tmp_path / "a" / "b"), mode=0o500, account=SELF, create_dirs=True)
    # owner rwx added so the files that follow can be written into it
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700
    make_dir(str(tmp_path / "a" / "b"), mode=0o755, account=SELF, create_dirs=False)

    write(tmp_path / "file")
    with pytest.raises(TransferError) as conflict:
        make_dir(str(tmp_path / "file"), mode=0o755, account=SELF, create_dirs=False)
    assert "not a directory" in conflict.value.message


def test_make_dir_gives_no_set_id_bits_and_keeps_a_sticky_bit(tmp_path: Path) -> None:
    make_dir(str(tmp_path / "shared"), mode=0o7777, account=SELF, create_dirs=False)
    assert oct(stat.S_IMODE((tmp_path / "shared").stat().st_mode)) == oct(0o1777)
