"""``jobfleet push``, ``jobfleet fetch`` and ``jobfleet logs`` of file steps."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from rich.console import Console

from jobfleet.cli import _client, _progress, _render
from jobfleet.cli._settings import Settings
from jobfleet.cli.files import fetch_rows, local_paths
from jobfleet.sdk import ExecutionResult, FileLog, HostResult, JobClient, TransferProgress

if TYPE_CHECKING:
    from conftest import Cli

BK = "/api/bk-job/prod/api/v3/"
ADMIN = "/api/jobfleet/v1"
IPS = {1: "127.0.0.1", 2: "127.0.0.2"}


def ok(data: Any) -> httpx.Response:
    return httpx.Response(200, json={"result": True, "code": 0, "data": data})


@dataclass
class FakeFiles:
    """A server in a MockTransport with hosts 1 and 2: uploads, downloads, one transfer
    job (77) and one fetch job (5), each finished at the first poll."""

    host_status: dict[int, int] = field(default_factory=lambda: {1: 9, 2: 9})
    errors: dict[int, str] = field(default_factory=dict)
    fetch_items: list[dict[str, Any]] = field(default_factory=list)
    corrupt: set[str] = field(default_factory=set)
    refuse_upload: bool = False
    stored: dict[str, bytes] = field(default_factory=dict)
    submitted: dict[str, Any] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    job: int = 77

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == f"{ADMIN}/files":
            return self.upload(request)
        if path.startswith(f"{ADMIN}/files/"):
            file_id = path.rsplit("/", 1)[1]
            data = self.stored[file_id]
            sha = "0" * 64 if file_id in self.corrupt else hashlib.sha256(data).hexdigest()
            return httpx.Response(200, content=data, headers={"X-Jobfleet-Sha256": sha})
        if path == f"{ADMIN}/fetch":
            self.job, self.submitted = 5, json.loads(request.content)
            return ok({"job_instance_id": 5, "job_instance_name": "f", "step_instance_id": 6})
        if path == f"{ADMIN}/fetch/5":
            return ok(self.fetch_items)
        name = path.removeprefix(BK)
        if name == "fast_transfer_file":
            self.submitted = json.loads(request.content)
            return ok({"job_instance_id": 77, "job_instance_name": "t", "step_instance_id": 88})
        if name == "get_job_instance_status":
            return ok(self.status())
        if name == "batch_get_job_instance_ip_log":
            ids = json.loads(request.content).get("host_id_list") or []
            logs = [{"bk_host_id": i, "ip": IPS[i], "file_logs": self.rows(i)} for i in ids]
            return ok({"log_type": 2, "file_task_logs": logs})
        return httpx.Response(404)

    def upload(self, request: httpx.Request) -> httpx.Response:
        if self.refuse_upload:
            body = {"result": False, "code": 1241010, "message": "The file is too large"}
            return httpx.Response(413, json=body)
        name = request.url.params["name"]
        file_id = f"u{len(self.stored) + 1}"
        self.stored[file_id] = request.content
        sha = hashlib.sha256(request.content).hexdigest()
        size = len(request.content)
        return ok(
            {
                "file_id": file_id,
                "name": name,
                "size": size,
                "sha256": sha,
                "path": f"{file_id}/{name}",
            }
        )

    def status(self) -> dict[str, Any]:
        failed = any(s != 9 for s in self.host_status.values())
        step_id = 88 if self.job == 77 else 6
        return {
            "finished": True,
            "job_instance": {
                "job_instance_id": self.job,
                "name": "t",
                "status": 4 if failed else 3,
            },
            "step_instance_list": [
                {
                    "step_instance_id": step_id,
                    "type": 2,
                    "status": 4 if failed else 3,
                    "step_ip_result_list": [
                        {"bk_host_id": i, "ip": IPS[i], "bk_cloud_id": 0, "status": s}
                        for i, s in self.host_status.items()
                    ],
                }
            ],
        }

    def rows(self, host_id: int) -> list[dict[str, Any]]:
        ok_host = self.host_status[host_id] == 9
        if self.job == 5:
            return [
                {
                    "mode": 0,
                    "src_ip": {"bk_cloud_id": 0, "ip": IPS[host_id]},
                    "src_path": item["path"],
                    "status": item["status"],
                    "log_content": "" if item["status"] == 4 else "permission denied",
                    "size": f"{item.get('size') or 0} Bytes",
                    "speed": "0 KB/s",
                    "process": "100%",
                }
                for item in self.fetch_items
                if item["bk_host_id"] == host_id
            ]
        sources = next(s for s in self.submitted["file_source_list"] if s.get("file_type") == 2)
        rows = []
        for path in sources["file_list"]:
            file_id, name = path.split("/")
            rows.append(
                {
                    "mode": 1,
                    "src_ip": {"bk_cloud_id": 0, "ip": "0.0.0.0"},
                    "src_path": name,
                    "dest_ip": {"bk_cloud_id": 0, "ip": IPS[host_id]},
                    "dest_path": self.submitted["file_target_path"].rstrip("/") + "/" + name,
                    "status": 4 if ok_host else 5,
                    "log_content": self.errors.get(host_id, ""),
                    "size": f"{len(self.stored[file_id])} Bytes",
                    "speed": "1024 KB/s" if ok_host else "0 KB/s",
                    "process": "100%" if ok_host else "0%",
                }
            )
        return rows

    def store(self, file_id: str, data: bytes) -> None:
        self.stored[file_id] = data


@pytest.fixture
def files_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFiles]:
    fake = FakeFiles()

    def make_client(settings: Settings) -> JobClient:
        return JobClient(
            settings.server,
            settings.app_code or "",
            settings.app_secret or "",
            settings.username,
            biz=settings.biz,
            transport=httpx.MockTransport(fake.handle),
        )

    monkeypatch.setattr(_client, "make_client", make_client)
    yield fake


def local(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def table_rows(out: str) -> list[list[str]]:
    """The header and the rows of a printed table, cell by cell."""
    lines = [line.replace("┃", "│") for line in out.splitlines()]
    return [[c.strip() for c in line.split("│")] for line in lines if "│" in line]


# --- push -----------------------------------------------------------------------


def test_push_uploads_then_transfers_and_prints_a_table(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    a = local(tmp_path, "app.tar.gz", b"a" * 2048)
    b = local(tmp_path, "app.conf", b"port=80\n")
    result = cli("push", a, b, "-H", "127.0.0.1", "--host", "127.0.0.2", "--to", "/opt/app")

    assert result.exit_code == 0, result.output
    assert files_server.stored == {"u1": b"a" * 2048, "u2": b"port=80\n"}
    assert files_server.submitted == {
        "file_source_list": [{"file_list": ["u1/app.tar.gz", "u2/app.conf"], "file_type": 2}],
        "file_target_path": "/opt/app",
        "account_alias": "root",
        "target_server": {
            "ip_list": [
                {"bk_cloud_id": 0, "ip": "127.0.0.1"},
                {"bk_cloud_id": 0, "ip": "127.0.0.2"},
            ]
        },
        "transfer_mode": 2,
        "timeout": 7200,
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
    }
    rows = table_rows(result.stdout)
    assert rows[0] == ["status", "ip", "files", "bytes", "speed", "error"]
    assert rows[1:] == [
        ["Success", "127.0.0.1", "2/2", "2.0 KB", "1.0 MB/s", ""],
        ["Success", "127.0.0.2", "2/2", "2.0 KB", "1.0 MB/s", ""],
    ]
    assert "✔ job 77 succeeded · 2/2 hosts done" in result.stdout
    assert "4.0 KB written" in result.stdout


def test_push_options_reach_the_request(cli: Cli, files_server: FakeFiles, tmp_path: Path) -> None:
    a = local(tmp_path, "a", b"x")
    result = cli(
        "push", a, "--host-id", "2", "--to", "/t", "--mode", "strict", "--limit", "10",
        "--account", "app", "--timeout", "60", "--biz", "7", "--name", "deploy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sent = files_server.submitted
    assert (sent["transfer_mode"], sent["upload_speed_limit"], sent["download_speed_limit"]) == (
        1,
        10,
        10,
    )
    assert (sent["account_alias"], sent["timeout"], sent["task_name"]) == ("app", 60, "deploy")
    assert sent["target_server"] == {"host_id_list": [2]}
    assert sent["bk_scope_id"] == "7"
    assert files_server.requests[0].url.params["bk_biz_id"] == "7"


def test_push_with_a_failed_host_exits_1_and_shows_why(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.host_status[1] = 202
    files_server.errors[1] = "target directory /t does not exist\nmore detail"
    result = cli(
        "push", local(tmp_path, "a", b"x"), "-H", "127.0.0.1", "-H", "127.0.0.2", "--to", "/t"
    )

    assert result.exit_code == 1, result.output
    rows = table_rows(result.stdout)[1:]
    # failures last, nearest the prompt
    assert rows == [
        ["Success", "127.0.0.2", "1/1", "1 B", "1.0 MB/s", ""],
        [
            "File transfer failed",
            "127.0.0.1",
            "0/1",
            "0 B",
            "-",
            "target directory /t does not exist",
        ],
    ]
    assert "✘ job 77 failed · 1 of 2 hosts failed" in result.stdout


def test_push_error_comes_out_whole_in_a_pipe(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    # docs/cli.md: piped output is never cut, whatever $COLUMNS says
    reason = "target directory /t does not exist: " + "y" * 120 + " END"
    files_server.host_status[1] = 202
    files_server.errors[1] = reason
    result = cli("push", local(tmp_path, "a", b"x"), "-H", "127.0.0.1", "--to", "/t")
    assert result.exit_code == 1, result.output
    assert reason in result.stdout


def test_push_json_is_the_transfer_result(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    result = cli("push", local(tmp_path, "a", b"xyz"), "-H", "127.0.0.1", "--to", "/t", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["job_instance_id"] == 77 and data["bytes_done"] == 6
    assert data["uploads"][0]["path"] == "u1/a"
    assert data["hosts"][0]["file_logs"][0]["dest_path"] == "/t/a"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "relative/dir", "-H", "127.0.0.1"], "not an absolute path"),
        (["--to", "/t"], "at least one --host"),
    ],
)
def test_push_usage_errors_exit_2_before_any_request(
    cli: Cli, files_server: FakeFiles, tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli("push", local(tmp_path, "a", b"x"), *args)
    assert result.exit_code == 2
    assert message in result.output
    assert files_server.requests == []


def test_push_of_a_missing_or_clashing_file_exits_2(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    missing = cli("push", str(tmp_path / "nope"), "-H", "127.0.0.1", "--to", "/t")
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
    (tmp_path / "x").mkdir()
    first = local(tmp_path, "a.conf", b"1")
    second = local(tmp_path / "x", "a.conf", b"2")
    clash = cli("push", first, second, "-H", "127.0.0.1", "--to", "/t")
    # the message wraps at the terminal width, which depends on the path's length
    assert clash.exit_code == 2 and "same name 'a.conf'" in " ".join(clash.output.split())
    assert files_server.requests == []


def test_push_refused_upload_exits_2_with_the_server_message(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.refuse_upload = True
    result = cli("push", local(tmp_path, "a", b"x"), "-H", "127.0.0.1", "--to", "/t")
    assert result.exit_code == 2
    assert "error 1241010: The file is too large" in result.output
    assert "Traceback" not in result.output


# --- fetch ----------------------------------------------------------------------


def fetched(host_id: int, path: str, file_id: str | None, status: int = 4) -> dict[str, Any]:
    return {
        "bk_host_id": host_id,
        "ip": IPS[host_id],
        "bk_cloud_id": 0,
        "path": path,
        "file_id": file_id,
        "size": 5,
        "sha256": None,
        "status": status,
    }


def test_fetch_saves_each_file_under_its_host(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.fetch_items = [
        fetched(1, "/var/log/app.log", "f1"),
        fetched(2, "/var/log/app.log", "f2"),
        fetched(2, "/etc/hosts", "f3"),
    ]
    for file_id in ("f1", "f2", "f3"):
        files_server.store(file_id, file_id.encode() * 2)
    out = tmp_path / "out"
    result = cli(
        "fetch", "-H", "127.0.0.1", "-H", "127.0.0.2", "/var/log/app.log", "/etc/hosts",
        "--to", str(out),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert files_server.submitted == {
        "file_list": ["/var/log/app.log", "/etc/hosts"],
        "account_alias": "root",
        "target_server": {
            "ip_list": [
                {"bk_cloud_id": 0, "ip": "127.0.0.1"},
                {"bk_cloud_id": 0, "ip": "127.0.0.2"},
            ]
        },
        "timeout": 7200,
        "bk_biz_id": 2,
    }
    assert (out / "0_127.0.0.1" / "app.log").read_bytes() == b"f1f1"
    assert (out / "0_127.0.0.2" / "app.log").read_bytes() == b"f2f2"
    assert (out / "0_127.0.0.2" / "hosts").read_bytes() == b"f3f3"
    rows = table_rows(result.stdout)
    assert rows[0] == ["status", "ip", "path", "saved as", "size", "error"]
    assert [r[:3] for r in rows[1:]] == [
        ["saved", "127.0.0.1", "/var/log/app.log"],
        ["saved", "127.0.0.2", "/var/log/app.log"],
        ["saved", "127.0.0.2", "/etc/hosts"],
    ]
    assert "✔ job 5 succeeded · 2/2 hosts done" in result.stdout


def test_fetch_mirrors_paths_when_basenames_clash(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.host_status = {1: 9}
    files_server.fetch_items = [fetched(1, "/a/app.log", "f1"), fetched(1, "/b/app.log", "f2")]
    files_server.store("f1", b"A")
    files_server.store("f2", b"B")
    result = cli("fetch", "-H", "127.0.0.1", "/*/app.log", "--to", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "0_127.0.0.1" / "a" / "app.log").read_bytes() == b"A"
    assert (tmp_path / "0_127.0.0.1" / "b" / "app.log").read_bytes() == b"B"


def test_fetch_with_a_failed_host_exits_1(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.host_status = {1: 9, 2: 203}
    files_server.fetch_items = [
        fetched(1, "/data/a", "f1"),
        fetched(1, "/data/b", None, status=5),
    ]
    files_server.store("f1", b"1")
    result = cli(
        "fetch", "-H", "127.0.0.1", "-H", "127.0.0.2", "/data/a", "/data/b", "--to", str(tmp_path)
    )
    assert result.exit_code == 1, result.output
    assert [p.name for p in (tmp_path / "0_127.0.0.1").iterdir()] == ["a"]
    assert not (tmp_path / "0_127.0.0.2").exists()
    rows = table_rows(result.stdout)[1:]
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        ("saved", "127.0.0.1", "/data/a", ""),
        ("failed", "127.0.0.1", "/data/b", "permission denied"),
        ("Source file not exist", "127.0.0.2", "-", ""),
    ]


def test_fetch_download_that_fails_its_checksum_exits_2(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.host_status = {1: 9}
    files_server.fetch_items = [fetched(1, "/data/a", "f1"), fetched(1, "/data/b", "f2")]
    files_server.store("f1", b"1")
    files_server.store("f2", b"2")
    files_server.corrupt.add("f1")
    result = cli("fetch", "-H", "127.0.0.1", "/data/a", "/data/b", "--to", str(tmp_path), "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert [(f["state"], f["saved"]) for f in data["files"]] == [
        ("not saved", None),
        ("saved", str(tmp_path / "0_127.0.0.1" / "b")),
    ]
    assert "checksum mismatch" in data["files"][0]["error"]
    assert "1 fetched file could not be saved" in result.stderr
    assert sorted(p.name for p in (tmp_path / "0_127.0.0.1").iterdir()) == ["b"]


def test_fetch_paths_must_be_absolute(cli: Cli, files_server: FakeFiles) -> None:
    result = cli("fetch", "-H", "127.0.0.1", "var/log/x")
    assert result.exit_code == 2 and "not an absolute path" in result.output
    assert files_server.requests == []


# --- logs of file steps -----------------------------------------------------------


def test_logs_of_a_file_step_print_one_line_per_file(
    cli: Cli, files_server: FakeFiles, tmp_path: Path
) -> None:
    files_server.host_status[2] = 202
    files_server.errors[2] = "disk full"
    assert (
        cli(
            "push", local(tmp_path, "a", b"xy"), "-H", "127.0.0.1", "-H", "127.0.0.2", "--to", "/t"
        ).exit_code
        == 1
    )

    result = cli("logs", "77")
    # the job failed (one host could not write): logs says so with its exit code
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "== 127.0.0.1 (Success, exit -) =="
    assert lines[1].split() == [
        "download",
        "0.0.0.0:a",
        "->",
        "/t/a",
        "success",
        "2",
        "B",
        "1.0",
        "MB/s",
        "100%",
    ]
    assert lines[2] == "== 127.0.0.2 (File transfer failed, exit -) =="
    assert lines[3].split()[4:] == ["failed", "2", "B", "-", "0%"]
    assert lines[4] == "    disk full"

    raw = cli("logs", "77", "--host", "127.0.0.2")
    assert raw.exit_code == 0
    assert raw.stdout.endswith("0%\n    disk full\n") and "==" not in raw.stdout


# --- pieces -----------------------------------------------------------------------


def row(host_id: int, path: str, state: str = "arrived") -> dict[str, Any]:
    return {**fetched(host_id, path, f"id-{path}"), "state": state}


def test_local_paths_are_flat_unless_a_host_has_two_of_a_name() -> None:
    flat = local_paths(
        [row(1, "/a/x.log"), row(2, "/a/x.log"), row(1, "/b/y"), row(2, "/z", "failed")]
    )
    assert flat == [
        PurePosixPath("0_127.0.0.1/x.log"),
        PurePosixPath("0_127.0.0.2/x.log"),
        PurePosixPath("0_127.0.0.1/y"),
        None,
    ]
    mirrored = local_paths([row(1, "/a/x.log"), row(1, "/b/../c/./x.log"), row(2, "/q")])
    assert mirrored == [
        PurePosixPath("0_127.0.0.1/a/x.log"),
        PurePosixPath("0_127.0.0.1/c/x.log"),
        PurePosixPath("0_127.0.0.2/q"),
    ]
    # nothing climbs out of the host's folder
    climbing = local_paths([row(1, "/../../etc/x"), row(1, "/var/x")])
    assert climbing == [PurePosixPath("0_127.0.0.1/etc/x"), PurePosixPath("0_127.0.0.1/var/x")]


def test_fetch_rows_keep_one_row_per_file_and_per_silent_host() -> None:
    result = ExecutionResult(
        5,
        6,
        4,
        True,
        [
            HostResult(1, "127.0.0.1", 0, 9, None),
            HostResult(2, "127.0.0.2", 0, 320, None, log="cannot reach the agent\n"),
        ],
    )
    rows = fetch_rows(result, [fetched(1, "/a", "f1"), fetched(1, "//a/.", "f1")])
    assert [(r["ip"], r["path"], r["state"], r["error"]) for r in rows] == [
        ("127.0.0.1", "/a", "arrived", ""),
        ("127.0.0.2", None, "File fetch failed", "cannot reach the agent"),
    ]


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (20 * 1024**2, "20.0 MB")],
)
def test_format_bytes(size: int | None, text: str) -> None:
    assert _render.format_bytes(size) == text


def test_aggregate_speed_weighs_files_by_their_time() -> None:
    def log(size: int, speed: int) -> FileLog:
        return FileLog(1, "", 0, "/x", 4, size=size, speed=speed)

    # 100 bytes at 100/s and 300 bytes at 100/s: 400 bytes in 4 seconds
    assert _render.aggregate_speed([log(100, 100), log(300, 100), log(0, 0)]) == 100
    assert _render.aggregate_speed([log(10, 0)]) == 0


def test_transfer_bar_shows_upload_then_bytes_and_hosts() -> None:
    console = Console(force_terminal=True, width=140, record=True, file=io.StringIO())
    with _progress.TransferBar(console) as bar:
        bar.upload(512, 1024)
        bar.update(
            TransferProgress(77, 2, 4, 1, 1, 1, 1.0, False, bytes_done=1024, bytes_total=4096)
        )
        assert bar._progress is not None
        tasks = bar._progress.tasks
        assert len(tasks) == 1
        assert (tasks[0].completed, tasks[0].total) == (1024, 4096)
        assert tasks[0].fields["hosts"] == "1/4 hosts [red]1 failed[/]"
    # off a terminal it does nothing at all
    quiet = _progress.TransferBar(Console(file=io.StringIO()))
    with quiet:
        quiet.update(TransferProgress(77, 2, 4, 1, 1, 1, 1.0, False))
    assert quiet._progress is None


def test_push_takes_a_module(cli: Cli, files_server: FakeFiles, tmp_path: Path) -> None:
    topology = {"sets": [{"id": 10, "name": "web", "modules": [{"id": 11, "name": "nginx"}]}]}
    handle = files_server.handle

    def with_topology(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"{ADMIN}/topology":
            return httpx.Response(200, json={"result": True, "code": 0, "data": topology})
        return handle(request)

    files_server.handle = with_topology  # type: ignore[method-assign]
    a = local(tmp_path, "a", b"x")
    result = cli("push", a, "--to", "/t", "--module", "web/nginx", "--biz", "2")
    assert result.exit_code == 0, result.output
    assert files_server.submitted["target_server"] == {
        "topo_node_list": [{"node_type": "module", "id": 11}]
    }
