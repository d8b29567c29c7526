"""``jobfleet cron add``'s variable values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from jobfleet.cli._render import format_time

if TYPE_CHECKING:
    from conftest import Cli, FakeServer


def test_cron_add_reads_a_value_from_a_file_to_keep_it_off_the_command_line(
    cli: Cli, server: FakeServer, tmp_path: Path
) -> None:
    answer = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("save_cron"):
            server.requests.append(request)
            return server.ok({"id": 3, "name": "nightly", "status": 2, "job_plan_id": 12})
        return answer(request)

    server.handle = handle  # type: ignore[method-assign]
    secret = tmp_path / "db.pw"
    secret.write_text("s3cr3t\n")
    result = cli(
        "cron", "add", "nightly", "--plan", "12", "--cron", "0 2 * * *",
        "--var", "version=1.4", "--var-file", f"db_pw={secret}",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [sent] = [r for r in server.requests if r.url.path.endswith("save_cron")]
    assert json.loads(sent.content)["global_var_list"] == [
        {"name": "version", "value": "1.4"}, {"name": "db_pw", "value": "s3cr3t"}]
    result = cli("cron", "add", "x", "--plan", "12", "--cron", "0 2 * * *", "--var-file", "db_pw")
    assert result.exit_code == 2, result.output
    assert "--var-file" in result.output


def test_a_one_shot_cron_is_listed_with_its_time(cli: Cli, server: FakeServer) -> None:
    """``cron list`` shows when a one-shot cron fires as a time, not epoch seconds."""
    answer = server.handle
    once = {"id": 2, "name": "once", "status": 2, "job_plan_id": 12,
            "execute_time": 1_827_601_200, "execute_time_zone": "UTC"}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("get_cron_list"):
            return server.ok({"start": 0, "length": 1000, "total": 1, "data": [once]})
        return answer(request)

    server.handle = handle  # type: ignore[method-assign]
    result = cli("cron", "list")
    assert result.exit_code == 0, result.output
    assert f"once at {format_time(1_827_601_200)}" in result.stdout, result.stdout
    assert "1827601200" not in result.stdout
