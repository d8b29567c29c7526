"""``jobfleet plan run``."""

from __future__ import annotations

import json
from pathlib import Path
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
    said = " ".join(result.stderr.split())
    assert ("job 77 keeps running on the server: follow it with `jobfleet logs -f 77`, "
            "or see how it stands with `jobfleet status 77`") in said, said


def test_a_value_can_come_from_a_file_and_stay_off_the_command_line(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    # --var puts a password in the process list for anyone on the machine to read
    secret = tmp_path / "db.pw"
    secret.write_text("s3cr3t=with equals\n")
    result = cli("plan", "run", "12", "--var", "version=1.4", "--var-file", f"db_pw={secret}")
    assert result.exit_code == 0, result.output
    [sent] = [r for r in server.requests if r.url.path.endswith("execute_job_plan")]
    assert json.loads(sent.content)["global_var_list"] == [
        {"name": "version", "value": "1.4"}, {"name": "db_pw", "value": "s3cr3t=with equals"}]
    for bad in ("db_pw", f"={secret}", f"db_pw={tmp_path / 'missing'}"):
        result = cli("plan", "run", "12", "--var-file", bad)
        assert result.exit_code == 2, result.output
        assert "--var-file" in result.output


def test_a_misspelt_variable_is_refused_before_the_plan_runs(
    cli: Cli, server: FakeServer
) -> None:
    """bk-job's execute_job_plan ignores a value for a variable the plan does not have
    (so saved callers survive a plan's change); from the command line that is a typo,
    and the plan would run with the old value."""
    result = cli("plan", "run", "12", "--var", "verison=1.4", "--hosts", "targets=127.0.0.1")
    assert result.exit_code == 2, result.output
    assert "plan 12 has no variable named 'verison'" in result.stderr
    assert "version, db_pw, targets" in result.stderr
    assert "execute_job_plan" not in server.names()
    # names the plan has are sent as given
    assert cli("plan", "run", "12", "--var", "version=1.4").exit_code == 0
    assert server.submitted["global_var_list"] == [{"name": "version", "value": "1.4"}]
