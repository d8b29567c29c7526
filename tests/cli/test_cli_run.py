"""``jobfleet run``: what it submits, what it prints, how it exits."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Cli, FakeServer


def script_of(server: FakeServer) -> str:
    return base64.b64decode(server.submitted["script_content"]).decode()


def test_successful_run_exits_0_with_table_and_summary(cli: Cli, server: FakeServer) -> None:
    result = cli("run", "-H", "127.0.0.1", "-H", "2:127.0.0.2", "-c", "uptime", "--name", "up")

    assert result.exit_code == 0, result.output
    assert script_of(server) == "uptime"
    assert server.submitted == server.submitted | {
        "script_language": 1,
        "account_alias": "root",
        "timeout": 7200,
        "task_name": "up",
        "bk_scope_type": "biz",
        "bk_scope_id": "2",
        "target_server": {
            "ip_list": [
                {"bk_cloud_id": 0, "ip": "127.0.0.1"},
                {"bk_cloud_id": 2, "ip": "127.0.0.2"},
            ]
        },
    }
    assert "script_param" not in server.submitted
    out = result.stdout
    assert "Success (2)" in out
    assert "127.0.0.1" in out and "127.0.0.2" in out
    # the excerpt is the last 3 non-empty lines
    assert "all done" in out and "step two" in out and "step one" in out
    assert "starting" not in out
    assert "✔ job 77 succeeded · 2/2 hosts done" in out


def test_failed_host_exits_1_and_is_listed_after_successes(cli: Cli, server: FakeServer) -> None:
    server.job_status = 4
    server.hosts[0].status, server.hosts[0].exit_code = 104, 3
    result = cli("run", "--host", "127.0.0.1", "--host", "127.0.0.2", "-c", "false")

    assert result.exit_code == 1
    out = result.stdout
    assert out.index("Success (1)") < out.index("Script exit code non-zero (1)")
    assert "✘ job 77 failed · 1 of 2 hosts failed" in out


def test_unfinished_polls_then_finishes(cli: Cli, server: FakeServer) -> None:
    server.polls_until_done = 2
    result = cli("run", "-H", "127.0.0.1", "-c", "true", "--poll-interval", "0.05")
    assert result.exit_code == 0
    assert server.names().count("get_job_instance_status") == 3


def test_json_output_is_the_execution_result(cli: Cli, server: FakeServer) -> None:
    server.hosts[1].log = "x" * 500 + "\n"
    result = cli("run", "-H", "127.0.0.1", "--host-id", "2", "-c", "id", "--json")

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["job_instance_id"] == 77
    assert data["step_instance_id"] == 88
    assert [h["ip"] for h in data["hosts"]] == ["127.0.0.1", "127.0.0.2"]
    assert data["hosts"][1]["log"] == "x" * 500 + "\n"
    assert server.submitted["target_server"] == {
        "host_id_list": [2],
        "ip_list": [{"bk_cloud_id": 0, "ip": "127.0.0.1"}],
    }


def test_options_reach_the_request(cli: Cli, server: FakeServer) -> None:
    result = cli(
        "--biz",
        "3",
        "run",
        "--biz",
        "7",
        "-H",
        "127.0.0.1",
        "--cloud",
        "4",
        "-c",
        "echo $1",
        "--param",
        "a 'b c'",
        "--account",
        "deploy",
        "--timeout",
        "60",
        "--lang",
        "perl",
    )
    assert result.exit_code == 0, result.output
    assert server.submitted["bk_scope_id"] == "7"
    assert server.submitted["target_server"]["ip_list"] == [{"bk_cloud_id": 4, "ip": "127.0.0.1"}]
    assert base64.b64decode(server.submitted["script_param"]).decode() == "a 'b c'"
    assert (server.submitted["account_alias"], server.submitted["timeout"]) == ("deploy", 60)
    assert server.submitted["script_language"] == 3
    # every later call of the job uses the same business
    assert all("bk_scope_id=7" in str(r.url) or b'"7"' in r.content for r in server.requests)


@pytest.mark.parametrize(
    ("filename", "lang", "expected"),
    [
        ("check.py", None, 4),
        ("check.pl", None, 3),
        ("check.ps1", None, 5),
        ("check.sh", None, 1),
        ("check", None, 1),
        ("check.py", "shell", 1),
        ("check.sh", "2", 2),
        ("check.sh", "Python", 4),
    ],
)
def test_language_from_file_extension_or_lang(
    cli: Cli, server: FakeServer, tmp_path: Path, filename: str, lang: str | None, expected: int
) -> None:
    path = tmp_path / filename
    path.write_text("print('hi')\n")
    args = ["run", "-H", "127.0.0.1", "--file", str(path)]
    if lang:
        args += ["--lang", lang]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert server.submitted["script_language"] == expected
    assert script_of(server) == "print('hi')\n"


def test_script_from_stdin(cli: Cli, server: FakeServer) -> None:
    result = cli("run", "-H", "127.0.0.1", "--file", "-", input="echo piped\n")
    assert result.exit_code == 0
    assert script_of(server) == "echo piped\n"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-H", "127.0.0.1"],
        ["run", "-H", "127.0.0.1", "-c", "x", "--file", "y.sh"],
        ["run", "-c", "uptime"],
        ["run", "-H", "127.0.0.1", "-c", "x", "--lang", "cobol"],
        ["run", "-H", "127.0.0.1", "--file", "/nonexistent/x.sh"],
        ["run", "-H", "127.0.0.1", "-c", "x", "--timeout", "0"],
    ],
)
def test_usage_errors_exit_2_without_a_request(
    cli: Cli, server: FakeServer, args: list[str]
) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert server.requests == []


def test_api_error_exits_2_with_code_and_message(cli: Cli, server: FakeServer) -> None:
    server.errors["fast_execute_script"] = (1244002, "Hosts invalid: 127.0.0.9")
    result = cli("run", "-H", "127.0.0.9", "-c", "true")
    assert result.exit_code == 2
    assert "error 1244002: Hosts invalid: 127.0.0.9" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_unreachable_server_exits_2(cli: Cli) -> None:
    # no fake server: the real client dials a closed port
    result = cli("--server", "http://127.0.0.1:9", "run", "-H", "127.0.0.1", "-c", "true")
    assert result.exit_code == 2
    assert "cannot connect to http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("interval", ["0", "-1", "0.001"])
@pytest.mark.parametrize(
    "command",
    [
        ["run", "-H", "127.0.0.1", "-c", "true"],
        ["push", "--to", "/tmp", "-H", "127.0.0.1", __file__],
        ["fetch", "/etc/hosts", "-H", "127.0.0.1"],
    ],
)
def test_a_poll_interval_too_short_to_be_meant_is_a_usage_error(
    cli: Cli, server: FakeServer, command: list[str], interval: str
) -> None:
    # polling with no pause would hammer the server for the job's whole life
    result = cli(*command, "--poll-interval", interval)
    assert result.exit_code == 2, result.output
    assert "--poll-interval" in result.output
    assert server.names() == []


def test_an_empty_script_is_refused_naming_what_was_given(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.sh"
    empty.write_text("")
    for given, says in ((["-c", ""], "-c"), (["--file", str(empty)], "--file")):
        result = cli("run", "-H", "127.0.0.1", *given)
        assert result.exit_code == 2, result.output
        assert "empty" in result.output and says in result.output
        assert "script_id" not in result.output
    assert server.names() == []
