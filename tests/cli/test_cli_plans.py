"""``jobfleet plan run``."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
