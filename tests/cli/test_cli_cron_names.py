"""Crons by name: ``cron add`` makes no second cron of a name, and a name two crons
share (left by a server that took them) is refused rather than guessed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from conftest import Cli, FakeServer

CRONS = [
    {"id": 3, "name": "nightly", "status": 2, "job_plan_id": 12},
    {"id": 5, "name": "nightly", "status": 2, "job_plan_id": 12},
    {"id": 7, "name": "nightly backup", "status": 2, "job_plan_id": 12},
]


def crons_of(server: FakeServer, crons: list[dict[str, Any]]) -> None:
    """The fake server answers the cron calls over ``crons``, a part of the name matching."""
    answer = server.handle

    def handle(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[1]
        if name == "get_cron_list":
            server.requests.append(request)
            part = request.url.params.get("name", "")
            data = [c for c in crons if part in c["name"]]
            return server.ok({"start": 0, "length": 1000, "total": len(data), "data": data})
        if name in ("save_cron", "update_cron_status", "get_cron_detail", "delete_cron"):
            server.requests.append(request)
            return server.ok(crons[-1] if name != "delete_cron" else None)
        return answer(request)

    server.handle = handle  # type: ignore[method-assign]


def test_cron_add_refuses_a_name_a_cron_of_the_business_has(
    cli: Cli, server: FakeServer
) -> None:
    crons_of(server, CRONS[2:])
    result = cli("cron", "add", "nightly backup", "--plan", "12", "--cron", "0 2 * * *")
    assert result.exit_code == 2, result.output
    assert "already has a cron named 'nightly backup' (id 7)" in result.output
    assert "jobfleet cron delete 7" in result.output
    assert "save_cron" not in server.names()
    # a name that is only a part of another cron's is free
    result = cli("cron", "add", "nightly", "--plan", "12", "--cron", "0 2 * * *")
    assert result.exit_code == 0, result.output
    assert "save_cron" in server.names()


def test_a_cron_named_by_two_crons_is_refused_not_guessed(
    cli: Cli, server: FakeServer
) -> None:
    crons_of(server, CRONS)
    for command in ("start", "pause", "delete"):
        result = cli("cron", command, "nightly")
        assert result.exit_code == 2, result.output
        assert "'nightly' is ambiguous in business" in result.output
        assert "(ids 3, 5)" in result.output
        assert "Traceback" not in result.output
    assert not {"update_cron_status", "delete_cron"} & set(server.names())
    result = cli("cron", "pause", "no such cron")
    assert result.exit_code == 2 and "no cron named 'no such cron'" in result.output
    # a name one cron has, or an id, picks that cron
    result = cli("cron", "delete", "nightly backup")
    assert result.exit_code == 0, result.output
    assert "cron 7 deleted" in result.output
    result = cli("cron", "delete", "5")
    assert result.exit_code == 0 and "cron 5 deleted" in result.output, result.output
