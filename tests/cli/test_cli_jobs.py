"""``jobfleet status``, ``logs`` and ``hosts``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

from jobfleet.cli._render import format_time

if TYPE_CHECKING:
    from conftest import Cli, FakeServer


def test_status_shows_job_steps_and_hosts(cli: Cli, server: FakeServer) -> None:
    server.hosts[1].status, server.hosts[1].exit_code = 1, None
    server.job_status = 4
    result = cli("status", "77")

    # the job failed: status says so with its exit code too
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "77  deploy web" in out
    assert "deploy step" in out
    assert "failed" in out
    assert "1.5s" in out
    assert "Agent abnormal (1)" in out
    assert "127.0.0.2" in out
    assert "✘ job 77 failed · 1 of 2 hosts failed" in out


def test_status_json_is_the_wire_data(cli: Cli, server: FakeServer) -> None:
    result = cli("status", "77", "--json", "--biz", "5")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["job_instance"]["job_instance_id"] == 77
    assert len(data["step_instance_list"][0]["step_ip_result_list"]) == 2
    assert server.requests[0].url.params["bk_scope_id"] == "5"
    assert server.requests[0].url.params["return_ip_result"] == "true"


def test_status_of_unknown_job_exits_2(cli: Cli, server: FakeServer) -> None:
    server.errors["get_job_instance_status"] = (1244006, "Job instance not exist")
    result = cli("status", "5")
    assert result.exit_code == 2
    assert "error 1244006: Job instance not exist" in result.stderr


def test_logs_print_every_host_under_a_header(cli: Cli, server: FakeServer) -> None:
    server.hosts[1].status, server.hosts[1].exit_code = 104, 2
    result = cli("logs", "77")
    assert result.exit_code == 0
    assert result.stdout == (
        "== 127.0.0.1 (Success, exit 0) ==\n"
        "starting\nstep one\nstep two\nall done\n"
        "== 127.0.0.2 (Script exit code non-zero, exit 2) ==\n"
        "hello from 2\n"
    )


def test_logs_of_one_host_are_raw(cli: Cli, server: FakeServer) -> None:
    server.hosts[0].log = "[red]not markup[/red]\r\n\ttabbed\n"
    result = cli("logs", "77", "--host", "127.0.0.1", "--step", "88")
    assert result.exit_code == 0
    assert result.stdout_bytes == b"[red]not markup[/red]\r\n\ttabbed\n"
    batch = [r for r in server.requests if r.url.path.endswith("batch_get_job_instance_ip_log")]
    assert json.loads(batch[0].content)["host_id_list"] == [1]


def test_logs_of_a_host_not_in_the_job_exit_2(cli: Cli, server: FakeServer) -> None:
    result = cli("logs", "77", "--host", "127.9.9.9")
    assert result.exit_code == 2
    assert "127.9.9.9 is not a target" in result.stderr


def test_hosts_table_and_filters(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/hosts")] = [
        {
            "bk_host_id": 1,
            "bk_biz_id": 2,
            "bk_cloud_id": 0,
            "ip": "127.0.0.1",
            "hostname": "web1",
            "os_type": "linux",
            "agent_id": "ag-1",
            "alive": True,
            "agent_version": "0.1.0",
            "last_seen": 1_700_000_000_000,
        },
        {
            "bk_host_id": 2,
            "bk_biz_id": 2,
            "bk_cloud_id": 0,
            "ip": "127.0.0.2",
            "hostname": "web2",
            "os_type": "linux",
            "agent_id": None,
            "alive": False,
            "agent_version": None,
            "last_seen": None,
        },
    ]
    result = cli("hosts")
    assert result.exit_code == 0, result.output
    assert "web1" in result.stdout and "ag-1" in result.stdout
    assert "2 hosts, 1 alive" in result.stdout
    assert cli("hosts", "--biz", "4", "--alive").exit_code == 0
    assert cli("hosts", "--dead").exit_code == 0
    paths = [path for _, path, _ in server.admin_requests()]
    assert paths == [
        "/hosts?bk_biz_id=2",
        "/hosts?bk_biz_id=4&alive=true",
        "/hosts?bk_biz_id=2&alive=false",
    ]


def test_hosts_show_the_os_name_the_console_shows(cli: Cli, server: FakeServer) -> None:
    """The console's hosts page shows an agent's OS name, the OS type only when the
    agent never told it: ``jobfleet hosts`` shows the same."""
    server.admin_answers[("GET", "/hosts")] = [
        {"bk_host_id": 1, "ip": "127.0.0.1", "os_type": "linux",
         "os_name": "Ubuntu 22.04.4 LTS", "alive": True},
        {"bk_host_id": 2, "ip": "127.0.0.2", "os_type": "linux", "os_name": "", "alive": False},
    ]
    result = cli("hosts")
    assert result.exit_code == 0, result.output
    first, second = [line for line in result.stdout.splitlines() if "127.0.0." in line]
    assert "Ubuntu 22.04.4 LTS" in first and "linux" not in first, first
    assert "linux" in second, second


def test_a_host_that_is_up_was_last_seen_now(cli: Cli, server: FakeServer) -> None:
    """``last_seen`` is when an agent connected or left: an agent up for a week was
    not last seen a week ago, while one that left was last seen when it left."""
    week_ago, hour_ago = 1_700_000_000_000, 1_700_600_000_000
    server.admin_answers[("GET", "/hosts")] = [
        {"bk_host_id": 1, "ip": "127.0.0.1", "alive": True, "last_seen": week_ago},
        {"bk_host_id": 2, "ip": "127.0.0.2", "alive": False, "last_seen": hour_ago},
    ]
    result = cli("hosts")
    assert result.exit_code == 0, result.output
    rows = {ip: line for line in result.stdout.splitlines()
            for ip in ("127.0.0.1", "127.0.0.2") if f" {ip} " in line}
    assert rows["127.0.0.1"].rstrip().endswith("now"), rows
    assert format_time(week_ago) not in rows["127.0.0.1"], rows
    assert rows["127.0.0.2"].rstrip().endswith(format_time(hour_ago)), rows


def test_hosts_json(cli: Cli, server: FakeServer) -> None:
    server.admin_answers[("GET", "/hosts")] = [{"bk_host_id": 1, "ip": "127.0.0.1"}]
    result = cli("hosts", "--json")
    assert json.loads(result.stdout) == [{"bk_host_id": 1, "ip": "127.0.0.1"}]


def test_ctrl_c_while_following_says_the_job_runs_on(cli: Cli, server: FakeServer) -> None:
    answer = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            raise KeyboardInterrupt
        return answer(request)

    server.handle = handle  # type: ignore[method-assign]
    for args in (
        ("logs", "-f", "77"),
        ("follow", "77"),
        ("run", "--stream", "-H", "127.0.0.1", "-c", "true"),
    ):
        result = cli(*args)
        assert result.exit_code == 130, result.output
        said = " ".join(result.stderr.split())
        assert ("job 77 keeps running on the server: follow it with `jobfleet logs -f 77`, "
                "or see how it stands with `jobfleet status 77`") in said, said


def test_hosts_come_in_the_order_of_the_api_and_the_console(cli: Cli,
                                                            server: FakeServer) -> None:
    """Host id order, as in ``hosts --json``, ``topo list`` and the console's hosts page:
    agents enrolled in any order still list each host at the same place everywhere."""
    server.admin_answers[("GET", "/hosts")] = [
        {"bk_host_id": i, "ip": ip, "alive": True}
        for i, ip in enumerate(["127.0.0.2", "127.0.0.5", "127.0.0.10", "127.0.0.3"], 1)
    ]
    result = cli("hosts")
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.stdout.splitlines() if "127.0.0." in line]
    assert ids == ["1", "2", "3", "4"], result.stdout
