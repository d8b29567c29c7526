"""``jobfleet plan run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import Cli, FakeServer


def test_plan_run_waits_and_prints_whole_log_lines_in_a_pipe(
    cli: Cli, server: FakeServer
) -> None:
    line = "x" * 150
    server.hosts[0].log = f"{line}\n"
    result = cli("plan", "run", "12")
    assert result.exit_code == 0, result.output
    # "nothing is cut or wrapped" when standard output is not a terminal
    assert line in result.stdout


def test_ctrl_c_while_a_plan_runs_says_the_job_runs_on(cli: Cli, server: FakeServer) -> None:
    answer = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("get_job_instance_status"):
            raise KeyboardInterrupt
        return answer(request)

    server.handle = handle  # type: ignore[method-assign]
    result = cli("plan", "run", "12")
    assert result.exit_code == 130, result.output
    assert "job 77 keeps running on the server (jobfleet status 77)" in result.stderr
