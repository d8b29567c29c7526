"""``jobfleet jobs`` (the history page's filters), ``token …`` and full width in pipes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
import pytest

from jobfleet.cli import _history
from jobfleet.cli._context import PIPE_WIDTH, make_console

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

ROWS = [
    {
        "job_instance_id": 9,
        "name": "nightly",
        "status": 4,
        "launch_mode": 3,
        "job_cron_id": 5,
        "operator": "alice",
        "create_time": 1_700_000_000_000,
        "total_time": 2500,
    }
]


def list_params(server: FakeServer) -> dict[str, str]:
    asked = [r for r in server.requests if r.url.path.endswith("/get_job_instance_list")]
    return dict(asked[-1].url.params)


@pytest.fixture
def history(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    original = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        server.requests.append(request)
        if request.url.path.endswith("/get_job_instance_list"):
            return server.ok({"start": 0, "length": 50, "total": 7, "data": ROWS})
        return original(request)

    monkeypatch.setattr(server, "handle", handle)
    return server


def test_jobs_filters_reach_the_server(cli: Cli, history: FakeServer) -> None:
    server = history
    result = cli(
        "jobs", "--status", "failed", "--user", "alice", "--name", "night", "--launch-mode",
        "cron", "--cron", "5", "--ip", "127.0.0.1", "--since", "2026-12-01", "--until",
        "2026-12-02T06:00", "--limit", "10", "--offset", "20", "--biz", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    params = list_params(server)
    assert params == params | {
        "status": "4",
        "operator": "alice",
        "name": "night",
        "launch_mode": "3",
        "job_cron_id": "5",
        "ip": "127.0.0.1",
        "start": "20",
        "length": "10",
        "bk_scope_id": "3",
        "create_time_start": str(int(datetime(2026, 12, 1).timestamp() * 1000)),
        "create_time_end": str(int(datetime(2026, 12, 2, 6).timestamp() * 1000)),
    }


def test_a_whole_history_is_counted_as_every_other_list_is(
    cli: Cli, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "1 of 1 job", "0 of 0 jobs": the total is named only when the list shows a part
    original = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/get_job_instance_list"):
            return server.ok({"start": 0, "length": 50, "total": 1, "data": ROWS})
        return original(request)

    monkeypatch.setattr(server, "handle", handle)
    result = cli("jobs")
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().splitlines()[-1].strip() == "1 job"


def test_jobs_table_and_json(cli: Cli, history: FakeServer) -> None:
    result = cli("jobs")
    assert result.exit_code == 0, result.output
    assert "nightly" in result.stdout and "failed" in result.stdout and "cron" in result.stdout
    assert "1 of 7 jobs" in result.stdout
    assert json.loads(cli("jobs", "--json").stdout) == ROWS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "sideways"], "unknown status 'sideways'"),
        (["--launch-mode", "fax"], "unknown launch mode 'fax'"),
        (["--since", "yesterday"], "'yesterday' is not a time"),
    ],
)
def test_jobs_bad_filters_exit_2(
    cli: Cli, server: FakeServer, args: list[str], message: str
) -> None:
    result = cli("jobs", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_relative_times() -> None:
    now = 10 * 86_400_000
    assert _history.when("2h", now) == now - 7_200_000
    assert _history.when("3d", now) == now - 3 * 86_400_000
    assert _history.when("90m", now) == now - 5_400_000
    assert _history.when("1w", now) == now - 7 * 86_400_000


def test_token_create_prints_the_secret_alone(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/tokens")] = {
        "id": 4,
        "token": "jfp_secret",
        "expires_at": 1_800_000_000,
        "note": "ci",
    }
    result = cli("token", "create", "--ttl", "30d", "--name", "ci")
    assert result.exit_code == 0, result.output
    assert result.stdout == "jfp_secret\n"
    assert "token 4 created" in result.stderr
    assert server.admin_requests()[-1] == (
        "POST",
        "/tokens",
        {"note": "ci", "expires_in": 30 * 86400},
    )
    assert json.loads(cli("token", "create", "--json").stdout)["id"] == 4


def test_token_list_and_revoke(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/tokens")] = [
        {"id": 4, "note": "ci", "expires_at": 1_800_000_000, "create_time": 1_700_000_000_000}
    ]
    server.admin_answers[("DELETE", "/tokens/4")] = {"id": 4}
    listed = cli("token", "list")
    assert listed.exit_code == 0 and "ci" in listed.stdout and "jfp_" not in listed.stdout
    # ended with a count, as the lists of jobs, hosts and crons are
    assert listed.stdout.rstrip().endswith("\n1 token"), listed.stdout
    assert json.loads(cli("token", "list", "--json").stdout)[0]["id"] == 4
    revoked = cli("token", "revoke", "4")
    assert revoked.exit_code == 0 and "revoked token 4" in revoked.stdout
    assert server.admin_requests()[-1][:2] == ("DELETE", "/tokens/4")


@pytest.mark.parametrize("ttl", ["400d", "soon", "0"])
def test_token_bad_ttl_is_a_usage_error(cli: Cli, server: FakeServer, ttl: str) -> None:
    result = cli("token", "create", "--ttl", ttl)
    assert result.exit_code == 2
    assert not server.requests


def test_a_console_on_a_pipe_never_wraps() -> None:
    # under pytest stdout is captured: not a terminal, whatever $COLUMNS says
    assert make_console().width == PIPE_WIDTH
    assert make_console(stderr=True).width == PIPE_WIDTH
