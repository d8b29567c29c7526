"""``jobfleet audit`` and ``jobfleet notify …`` against jobfleet's own API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from jobfleet.cli.audit import parse_time

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

ENTRY = {
    "id": 9,
    "create_time": 1_700_000_000_000,
    "app_code": "jobfleet",
    "username": "alice",
    "action": "create_script",
    "scope_type": "biz",
    "scope_id": "2",
    "resource_type": "script",
    "resource_id": "ab12",
    "detail": {"name": "deploy"},
    "source_ip": "127.1.1.1",
}


def audit_queries(server: FakeServer) -> list[dict[str, str]]:
    return [
        dict(r.url.params) for r in server.requests if r.url.path.endswith("/audit/entries")
    ]


def test_audit_prints_a_table_and_sends_the_filters(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/audit/entries")] = {
        "start": 0,
        "length": 20,
        "total": 1,
        "data": [ENTRY],
    }
    result = cli(
        "audit",
        "--user",
        "alice",
        "--action",
        "create_*",
        "--resource",
        "script:ab12",
        "--since",
        "1700000000000",
        "--biz",
        "2",
        "--limit",
        "20",
    )
    assert result.exit_code == 0, result.output
    assert audit_queries(server) == [
        {
            "create_time_start": "1700000000000",
            "username": "alice",
            "action": "create_*",
            "resource_type": "script",
            "resource_id": "ab12",
            "bk_biz_id": "2",
            "start": "0",
            "length": "20",
        }
    ]
    out = result.stdout
    for text in ("alice", "create_script", "script:ab12", "biz:2", "127.1.1.1", '"deploy"'):
        assert text in out
    assert "1 entry" in out


def test_audit_detail_comes_out_whole_in_a_pipe(cli: Cli, server: FakeServer) -> None:
    # docs/cli.md: piped output is never cut; a terminal's table shows the start only
    detail = {"name": "nightly", "expression": "0 2 * * *", "note": "x" * 150 + " END"}
    server.admin_answers[("GET", "/audit/entries")] = {
        "start": 0,
        "length": 20,
        "total": 1,
        "data": [{**ENTRY, "detail": detail}],
    }
    result = cli("audit", "--limit", "20")
    assert result.exit_code == 0, result.output
    assert "x" * 150 + ' END"}' in result.stdout


def test_audit_pages_until_the_limit(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/audit/entries")] = {
        "start": 0,
        "length": 1000,
        "total": 5000,
        "data": [ENTRY] * 1000,
    }
    result = cli("audit", "--limit", "1500", "--json")
    assert result.exit_code == 0, result.output
    assert [(q["start"], q["length"]) for q in audit_queries(server)] == [
        ("0", "1000"),
        ("1000", "500"),
    ]
    assert len(json.loads(result.stdout)) == 1500


def test_audit_rejects_an_unreadable_time(cli: Cli, server: FakeServer) -> None:
    result = cli("audit", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "--since" in result.output and not server.requests


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", 1_000_000 - 1800),
        ("2h", 1_000_000 - 7200),
        ("1d", 1_000_000 - 86400),
        ("1w", 1_000_000 - 604800),
        ("1.5h", 1_000_000 - 5400),
    ],
)
def test_parse_time_durations(text: str, expected: int) -> None:
    assert parse_time(text, now=1_000_000) == expected * 1000


def test_notify_commands(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("POST", "/businesses/2/notify-configs")] = {"id": 4, "statuses": [4, 9]}
    result = cli(
        "notify", "webhook", "http://127.0.0.1:9/x", "--on", "4", "--on", "ABNORMAL_STATE",
        env={"JOBFLEET_NOTIFY_SECRET": "k-123456789"},
    )
    assert result.exit_code == 0, result.output
    assert "added webhook 4" in result.stdout and "k-123456789" not in result.output
    result = cli("notify", "email", "ops@example.org", "--on", "SUCCESS", "--biz", "3")
    assert result.exit_code == 0, result.output
    assert cli("notify", "disable", "4").exit_code == 0
    assert cli("notify", "delete", "4").exit_code == 0
    assert server.admin_requests() == [
        (
            "POST",
            "/businesses/2/notify-configs",
            {
                "channel": "webhook",
                "target": "http://127.0.0.1:9/x",
                "statuses": [4, "ABNORMAL_STATE"],
                "secret": "k-123456789",
                "enabled": True,
            },
        ),
        (
            "POST",
            "/businesses/3/notify-configs",
            {
                "channel": "email",
                "target": ["ops@example.org"],
                "statuses": ["SUCCESS"],
                "enabled": True,
            },
        ),
        ("PUT", "/businesses/2/notify-configs/4", {"enabled": False}),
        ("DELETE", "/businesses/2/notify-configs/4", None),
    ]


def test_notify_takes_the_status_names_of_the_job_history(
        cli: Cli, server: FakeServer) -> None:
    """``--on failed`` (docs/cli.md) means what ``jobs --status failed`` means."""
    server.admin_answers[("POST", "/businesses/2/notify-configs")] = {"id": 5, "statuses": [4]}
    result = cli("notify", "webhook", "https://127.0.0.1:9/job", "--on", "failed",
                 "--on", "terminated", "--on", "FAIL",
                 env={"JOBFLEET_NOTIFY_SECRET": "k-123456789"})
    assert result.exit_code == 0, result.output
    assert server.admin_requests()[0][2]["statuses"] == [4, 8, "FAIL"]
