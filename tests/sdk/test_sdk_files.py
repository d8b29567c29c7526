"""upload_file, download_file, fetch_files, fetched_files and transfer_and_wait, sync and async."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from jobfleet.sdk import (
    AsyncJobClient,
    FileLog,
    FileLogMode,
    JobApiError,
    JobClient,
    TransferProgress,
    TransferResult,
    _flow,
)

BK = "/api/bk-job/prod/api/v3/"
FILES = "/api/jobfleet/v1/files"
T = TypeVar("T")


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"result": True, "code": 0, "data": data})


def fail(code: int, message: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"result": False, "code": code, "message": message})


def file_row(
    mode: int, path: str, status: int, size: str, process: str, dest: str | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mode": mode,
        "src_ip": {"bk_host_id": 9, "bk_cloud_id": 0, "ip": "127.0.0.9"},
        "src_path": path,
        "status": status,
        "log_content": "",
        "size": size,
        "speed": "2048 KB/s",
        "process": process,
    }
    if dest is not None:
        row["dest_ip"] = {"bk_host_id": 1, "bk_cloud_id": 0, "ip": "127.0.0.1"}
        row["dest_path"] = dest
    return row


@dataclass
class FakeFileServer:
    """Uploads, downloads, fetches and one file job (77, step 88) to hosts 1 and 2.

    At the first status poll host 1 is halfway through a 2 MB file and host 2 is
    done; at the second both are done. Source host 9 (127.0.0.9) uploaded /data/a.txt.
    """

    requests: list[httpx.Request] = field(default_factory=list)
    stored: dict[str, bytes] = field(default_factory=dict)
    submitted: dict[str, Any] = field(default_factory=dict)
    log_queries: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    upload_answer: Callable[[bytes], dict[str, Any]] | None = None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == FILES and request.method == "POST":
            return self.upload(request)
        if path.startswith(FILES + "/"):
            file_id = path.rsplit("/", 1)[1]
            if file_id not in self.stored:
                return fail(1240002, f"No file {file_id}", 404)
            data = self.stored[file_id]
            return httpx.Response(
                200,
                content=data,
                headers={
                    "X-Jobfleet-Sha256": hashlib.sha256(data).hexdigest(),
                    "Content-Disposition": f'attachment; filename="{file_id}.bin"',
                },
            )
        if path == "/api/jobfleet/v1/fetch":
            self.submitted = json.loads(request.content)
            return ok({"job_instance_id": 5, "job_instance_name": "f", "step_instance_id": 6})
        if path == "/api/jobfleet/v1/fetch/5":
            return ok([{"bk_host_id": 1, "ip": "127.0.0.1", "path": "/a", "file_id": "f1"}])
        name = path.removeprefix(BK)
        if name == "fast_transfer_file":
            self.submitted = json.loads(request.content)
            return ok({"job_instance_id": 77, "job_instance_name": "t", "step_instance_id": 88})
        if name == "get_job_instance_status":
            self.polls += 1
            return ok(self.status())
        if name == "batch_get_job_instance_ip_log":
            query = json.loads(request.content)
            self.log_queries.append(query)
            return ok(self.logs(query))
        return httpx.Response(404, text="no such route")

    def upload(self, request: httpx.Request) -> httpx.Response:
        data = request.content
        name = request.url.params["name"]
        file_id = f"blob{len(self.stored) + 1}"
        self.stored[file_id] = data
        answer = {
            "file_id": file_id,
            "name": name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": f"{file_id}/{name}",
        }
        if self.upload_answer is not None:
            answer |= self.upload_answer(data)
        return ok(answer)

    def done(self) -> bool:
        return self.polls > 1

    def status(self) -> dict[str, Any]:
        done = self.done()
        hosts = [
            {"bk_host_id": 1, "ip": "127.0.0.1", "bk_cloud_id": 0, "status": 9 if done else 7},
            {"bk_host_id": 2, "ip": "127.0.0.2", "bk_cloud_id": 0, "status": 9},
        ]
        job_status = 3 if done else 2
        return {
            "finished": done,
            "job_instance": {"job_instance_id": 77, "name": "t", "status": job_status},
            "step_instance_list": [
                {
                    "step_instance_id": 88,
                    "type": 2,
                    "status": job_status,
                    "step_ip_result_list": hosts,
                }
            ],
        }

    def logs(self, query: dict[str, Any]) -> dict[str, Any]:
        items = []
        for host_id in query.get("host_id_list") or []:
            running = host_id == 1 and not self.done()
            rows = [
                file_row(1, "/data/a.txt", 4, "1.0 KB", "100%", "/opt/a.txt"),
                file_row(
                    1,
                    "pkg.bin",
                    3 if running else 4,
                    "2.0 MB",
                    "50%" if running else "100%",
                    "/opt/pkg.bin",
                ),
            ]
            items.append({"bk_host_id": host_id, "ip": f"127.0.0.{host_id}", "file_logs": rows})
        for ip in query.get("ip_list") or []:
            rows = [file_row(0, "/data/a.txt", 4, "1.0 KB", "100%")]
            items.append({"bk_host_id": 9, "ip": ip["ip"], "file_logs": rows})
        return {"log_type": 2, "file_task_logs": items}

    def named(self, name: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/" + name)]


@pytest.fixture
def fake() -> FakeFileServer:
    return FakeFileServer()


def run_sync(fake: FakeFileServer, call: Callable[[JobClient], T]) -> T:
    transport = httpx.MockTransport(fake.handle)
    with JobClient("http://jf.test", "app", "secret", "admin", biz=2, transport=transport) as c:
        return call(c)


def run_async(fake: FakeFileServer, call: Callable[[AsyncJobClient], Awaitable[T]]) -> T:
    async def main() -> T:
        transport = httpx.MockTransport(fake.handle)
        async with AsyncJobClient(
            "http://jf.test", "app", "secret", "admin", biz=2, transport=transport
        ) as c:
            return await call(c)

    return asyncio.run(main())


def both(fake: FakeFileServer, flavor: str, call: Callable[[Any], Any]) -> Any:
    """Run ``call`` with the sync client, or the async one (its result awaited)."""
    if flavor == "sync":
        return run_sync(fake, call)
    return run_async(fake, call)


FLAVORS = pytest.mark.parametrize("flavor", ["sync", "async"])


# --- upload ---------------------------------------------------------------------


@FLAVORS
def test_upload_streams_the_file_with_its_length(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    data = bytes(range(256)) * 9000  # a bit over two chunks
    source = tmp_path / "pkg.tar.gz"
    source.write_bytes(data)
    sent: list[int] = []

    answer = both(fake, flavor, lambda c: c.upload_file(source, on_progress=sent.append))

    assert answer["path"] == "blob1/pkg.tar.gz" and fake.stored["blob1"] == data
    request = fake.requests[0]
    assert (request.method, request.url.path) == ("POST", FILES)
    assert dict(request.url.params) == {"name": "pkg.tar.gz", "bk_biz_id": "2"}
    assert request.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in request.headers
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert sent == [_flow.CHUNK_SIZE, 2 * _flow.CHUNK_SIZE, len(data)]


@FLAVORS
def test_upload_name_and_biz_can_be_given(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    (tmp_path / "x").write_bytes(b"")
    answer = both(fake, flavor, lambda c: c.upload_file(tmp_path / "x", name="y.txt", biz=7))
    assert answer["name"] == "y.txt" and answer["size"] == 0
    assert dict(fake.requests[0].url.params) == {"name": "y.txt", "bk_biz_id": "7"}


@FLAVORS
def test_upload_refused_for_size_is_an_api_error(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    (tmp_path / "big").write_bytes(b"x" * 10)

    def refuse(request: httpx.Request) -> httpx.Response:
        return fail(1241010, "The file is larger than 5 bytes", 413)

    fake.handle = refuse  # type: ignore[method-assign]
    with pytest.raises(JobApiError) as info:
        both(fake, flavor, lambda c: c.upload_file(tmp_path / "big"))
    assert (info.value.code, info.value.http_status) == (1241010, 413)
    assert "larger than 5 bytes" in str(info.value)


@FLAVORS
def test_upload_stored_differently_is_an_error(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    fake.upload_answer = lambda data: {"sha256": "0" * 64}
    with pytest.raises(JobApiError, match="different bytes"):
        both(fake, flavor, lambda c: c.upload_file(tmp_path / "f"))


@FLAVORS
def test_upload_of_a_directory_or_missing_file_sends_nothing(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    with pytest.raises(IsADirectoryError):
        both(fake, flavor, lambda c: c.upload_file(tmp_path))
    with pytest.raises(FileNotFoundError):
        both(fake, flavor, lambda c: c.upload_file(tmp_path / "absent"))
    assert fake.requests == []


# --- download -------------------------------------------------------------------


@FLAVORS
def test_download_writes_the_file_and_reports_progress(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    data = b"z" * (_flow.CHUNK_SIZE + 10)
    fake.stored["f1"] = data
    got: list[int] = []
    dest = tmp_path / "out.bin"

    both(fake, flavor, lambda c: c.download_file("f1", dest, on_progress=got.append))

    assert dest.read_bytes() == data
    assert got[-1] == len(data) and got == sorted(got)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    assert fake.requests[0].url.path == f"{FILES}/f1"


@FLAVORS
def test_download_with_a_wrong_checksum_keeps_the_old_file(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    dest = tmp_path / "keep.txt"
    dest.write_text("old\n")

    def corrupt(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"new", headers={"X-Jobfleet-Sha256": "ab" * 32})

    fake.handle = corrupt  # type: ignore[method-assign]
    with pytest.raises(JobApiError, match="checksum mismatch"):
        both(fake, flavor, lambda c: c.download_file("f1", dest))
    assert dest.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@FLAVORS
def test_download_without_a_checksum_header_is_accepted(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    def plain(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"{}", headers={"Content-Disposition": "attachment"})

    fake.handle = plain  # type: ignore[method-assign]
    both(fake, flavor, lambda c: c.download_file("f1", tmp_path / "a.json"))
    assert (tmp_path / "a.json").read_bytes() == b"{}"


@FLAVORS
@pytest.mark.parametrize(
    ("status", "code"), [(404, 1240002), (200, 1240001)], ids=["http-404", "envelope-200"]
)
def test_download_error_answers_raise_and_write_nothing(
    fake: FakeFileServer, tmp_path: Path, flavor: str, status: int, code: int
) -> None:
    fake.handle = lambda request: fail(code, "No file f9", status)  # type: ignore[method-assign]
    with pytest.raises(JobApiError) as info:
        both(fake, flavor, lambda c: c.download_file("f9", tmp_path / "x"))
    assert (info.value.code, info.value.http_status) == (code, status)
    assert list(tmp_path.iterdir()) == []


# --- fetch ----------------------------------------------------------------------


@FLAVORS
def test_fetch_files_and_fetched_files(fake: FakeFileServer, flavor: str) -> None:
    async def calls_async(c: AsyncJobClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        started = await c.fetch_files(["/var/log/app.log"], hosts=["127.0.0.1", "2:127.0.0.2"])
        return started, await c.fetched_files(5)

    def calls_sync(c: JobClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        started = c.fetch_files(["/var/log/app.log"], host_ids=[4], account="app", timeout=60)
        return started, c.fetched_files(5, biz=3)

    started, files = both(fake, flavor, calls_sync if flavor == "sync" else calls_async)

    assert started["job_instance_id"] == 5 and files[0]["file_id"] == "f1"
    expected: dict[str, Any] = {"file_list": ["/var/log/app.log"], "bk_biz_id": 2}
    if flavor == "sync":
        expected |= {"account_alias": "app", "timeout": 60, "target_server": {"host_id_list": [4]}}
        assert dict(fake.requests[1].url.params) == {"bk_biz_id": "3"}
    else:
        expected |= {
            "account_alias": "root",
            "target_server": {
                "ip_list": [
                    {"bk_cloud_id": 0, "ip": "127.0.0.1"},
                    {"bk_cloud_id": 2, "ip": "127.0.0.2"},
                ]
            },
        }
        assert dict(fake.requests[1].url.params) == {"bk_biz_id": "2"}
    assert fake.submitted == expected


def test_fetch_files_needs_a_list_of_paths_and_a_target(fake: FakeFileServer) -> None:
    with pytest.raises(ValueError, match="list of absolute file paths"):
        run_sync(fake, lambda c: c.fetch_files("/a", hosts=["127.0.0.1"]))
    with pytest.raises(ValueError, match="no target"):
        run_sync(fake, lambda c: c.fetch_files(["/a"]))
    assert fake.requests == []


# --- transfer_and_wait ------------------------------------------------------------


@FLAVORS
def test_transfer_uploads_submits_polls_and_collects(
    fake: FakeFileServer, tmp_path: Path, flavor: str
) -> None:
    (tmp_path / "pkg.bin").write_bytes(b"p" * 3000)
    (tmp_path / "b.conf").write_bytes(b"c" * 1000)
    progress: list[TransferProgress] = []
    uploaded: list[tuple[int, int]] = []

    result: TransferResult = both(
        fake,
        flavor,
        lambda c: c.transfer_and_wait(
            [tmp_path / "pkg.bin", str(tmp_path / "b.conf")],
            remote_files=[(["/data/a.txt"], ["127.0.0.9"])],
            hosts=["127.0.0.1", "127.0.0.2"],
            target_path="/opt/",
            account="app",
            transfer_mode=1,
            download_speed_limit=5,
            timeout=60,
            poll_interval=0,
            on_progress=progress.append,
            on_upload=lambda sent, total: uploaded.append((sent, total)),
        ),
    )

    assert uploaded == [(3000, 4000), (4000, 4000)]
    assert fake.submitted == {
        "file_source_list": [
            {
                "file_list": ["/data/a.txt"],
                "account": {"alias": "app"},
                "server": {"ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.9"}]},
                "file_type": 1,
            },
            {"file_list": ["blob1/pkg.bin", "blob2/b.conf"], "file_type": 2},
        ],
        "file_target_path": "/opt/",
        "account_alias": "app",
        "target_server": {
            "ip_list": [
                {"bk_cloud_id": 0, "ip": "127.0.0.1"},
                {"bk_cloud_id": 0, "ip": "127.0.0.2"},
            ]
        },
        "transfer_mode": 1,
        "download_speed_limit": 5,
        "timeout": 60,
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
    }
    mb2, kb1 = 2 * 1024 * 1024, 1024
    # first poll: host 1 has half of its 2 MB file, host 2 everything
    assert [(p.done, p.total, p.bytes_done, p.bytes_total, p.finished) for p in progress] == [
        (1, 2, kb1 + mb2 // 2 + kb1 + mb2, 2 * (kb1 + mb2), False),
        (2, 2, 2 * (kb1 + mb2), 2 * (kb1 + mb2), True),
    ]
    # host 2 was finished at the first poll: its file logs are not asked for again
    assert [q.get("host_id_list") for q in fake.log_queries] == [[1, 2], [1], [1, 2], None]
    assert fake.log_queries[-1]["ip_list"] == [{"bk_cloud_id": 0, "ip": "127.0.0.9"}]

    assert isinstance(result, TransferResult) and result.ok
    assert (result.job_instance_id, result.step_instance_id) == (77, 88)
    assert [u["path"] for u in result.uploads] == ["blob1/pkg.bin", "blob2/b.conf"]
    assert result.bytes_total == result.bytes_done == 2 * (kb1 + mb2)
    assert [(f.mode, f.src_path) for f in result.source_logs] == [(0, "/data/a.txt")]
    first = result.hosts[0].file_logs[1]
    assert (first.mode, first.dest_path, first.size, first.speed, first.progress) == (
        1,
        "/opt/pkg.bin",
        mb2,
        2 * 1024 * 1024,
        100,
    )
    assert result.to_dict()["ok"] is True


def test_transfer_without_progress_callback_polls_status_only(
    fake: FakeFileServer, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("x")
    run_sync(
        fake,
        lambda c: c.transfer_and_wait(
            [tmp_path / "f"], host_ids=[1], target_path="/t", poll_interval=0
        ),
    )
    assert len(fake.log_queries) == 1  # the final result's logs
    assert fake.submitted["target_server"] == {"host_id_list": [1]}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "nothing to transfer"),
        ({"remote_files": [("/a", ["127.0.0.9"])]}, "each remote source"),
        ({"remote_files": [(["/a"], [])]}, "each remote source"),
        ({"remote_files": [(["/a"], ["127.0.0.9"])], "transfer_mode": 3}, "transfer_mode 3"),
    ],
)
def test_transfer_arguments_are_checked_before_anything_is_sent(
    fake: FakeFileServer, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        run_sync(
            fake, lambda c: c.transfer_and_wait(hosts=["127.0.0.1"], target_path="/t", **kwargs)
        )
    assert fake.requests == []


def test_local_files_with_one_name_are_refused_before_upload(
    fake: FakeFileServer, tmp_path: Path
) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "app.conf").write_text(folder)
    with pytest.raises(ValueError, match=r"same name 'app\.conf'"):
        run_sync(
            fake,
            lambda c: c.transfer_and_wait(
                [tmp_path / "a" / "app.conf", tmp_path / "b" / "app.conf"],
                hosts=["127.0.0.1"],
                target_path="/t",
            ),
        )
    assert fake.requests == []


# --- the pure parts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1.0 Bytes", 1),
        ("0.0 Bytes", 0),
        ("1.5 KB", 1536),
        ("2.0 MB", 2 * 1024**2),
        ("1.2 GB", round(1.2 * 1024**3)),
        ("123 KB/s", 123 * 1024),
        ("0 KB/s", 0),
        ("7", 7),
        (9, 9),
        ("", 0),
        (None, 0),
        ("lots", 0),
        ("3 parsecs", 0),
    ],
)
def test_parse_size(text: Any, size: int) -> None:
    assert _flow.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "percent"), [("45%", 45), ("100%", 100), ("0%", 0), ("150%", 100), ("x", 0), (None, 0)]
)
def test_parse_percent(text: Any, percent: int) -> None:
    assert _flow.parse_percent(text) == percent


def test_file_log_from_the_wire_and_its_bytes() -> None:
    item = _flow.file_log(file_row(1, "/src/a", 3, "1.0 MB", "25%", "/dst/a"))
    assert item == FileLog(
        mode=FileLogMode.DOWNLOAD,
        src_ip="127.0.0.9",
        src_cloud_id=0,
        src_path="/src/a",
        status=3,
        dest_ip="127.0.0.1",
        dest_path="/dst/a",
        size=1024**2,
        speed=2048 * 1024,
        progress=25,
    )
    assert item.bytes_done == 1024**2 // 4 and not item.finished
    # older gateways: "cloud:ip" strings
    legacy = _flow.file_log({"mode": 0, "src_ip": "2:127.1.1.1", "status": 4, "size": "3 Bytes"})
    assert (legacy.src_ip, legacy.src_cloud_id, legacy.bytes_done) == ("127.1.1.1", 2, 3)
    assert legacy.succeeded and legacy.dest_ip is None


def test_step_logs_keep_text_and_files_per_host() -> None:
    logs = _flow.StepLogs().add(
        {
            "file_task_logs": [
                {
                    "bk_host_id": 1,
                    "file_logs": [
                        {**file_row(1, "/a", 5, "0 Bytes", "0%", "/b"), "log_content": "denied"},
                        file_row(1, "/c", 4, "1 KB", "100%", "/d"),
                    ],
                }
            ]
        }
    )
    assert logs.text == {1: "denied\n"}
    assert [f.src_path for f in logs.files[1]] == ["/a", "/c"]
