"""``jobfleet cron``: schedules that run execution plans (docs/cron.md)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobfleet.cli import _render
from jobfleet.cli._context import (
    BizOption,
    CliContext,
    HostsOption,
    JsonOption,
    VarFileOption,
    VarOption,
    cli_context,
)
from jobfleet.cli.templates import global_vars

if TYPE_CHECKING:
    from jobfleet.sdk import JobClient

cron_app = typer.Typer(help="Crons: run a plan on a schedule or once.", no_args_is_help=True)

RUNNING, PAUSED = 1, 2
CronArgument = Annotated[
    str,
    typer.Argument(
        metavar="CRON", help="Cron id, or its name if no other cron of the business has it."
    ),
]
COLUMNS = [
    "id",
    "name",
    "state",
    "job_plan_id",
    "schedule",
    "execute_time_zone",
    "last_modify_user",
]


def register(app: typer.Typer) -> None:
    app.add_typer(cron_app, name="cron")


def _scope(cli: CliContext, biz: int | None) -> dict[str, Any]:
    return {"bk_biz_id": biz if biz is not None else cli.settings.biz}


def _when(text: str) -> int:
    """Epoch seconds, or an ISO date and time (with its offset, else local time)."""
    if text.isdecimal():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither epoch seconds nor an ISO time") from None


def _row(cron: dict[str, Any]) -> dict[str, Any]:
    schedule = cron.get("expression") or (
        f"once at {_render.format_time(cron['execute_time'])}" if cron.get("execute_time") else ""
    )
    state = "running" if cron.get("status") == RUNNING else "paused"
    return {**cron, "schedule": schedule, "state": state}


def _all(client: JobClient, scope: dict[str, Any], name: str | None = None) -> list[dict[str, Any]]:
    """Every cron of the scope; with ``name``, those whose name contains it."""
    rows: list[dict[str, Any]] = []
    while True:
        page = client.get_cron_list(start=len(rows), length=1000, name=name, **scope)
        rows.extend(page["data"])
        if len(rows) >= page["total"] or not page["data"]:
            return rows


def _named(client: JobClient, scope: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The crons named exactly ``name`` (the server's name filter matches a part of it)."""
    name = name.strip()
    return [c for c in _all(client, scope, name) if c.get("name") == name]


def _cron_id(cli: CliContext, client: JobClient, scope: dict[str, Any], given: str) -> int:
    """A cron given by id or by its exact name; a name two crons share is refused, as
    acting on either could be the wrong one."""
    if given.isdecimal():
        return int(given)
    found = _named(client, scope, given)
    where = f"business {scope['bk_biz_id']}"
    if not found:
        cli.fail(f"error: no cron named {given!r} in {where}")
    if len(found) > 1:
        ids = ", ".join(str(c["id"]) for c in found)
        cli.fail(f"error: cron name {given!r} is ambiguous in {where} (ids {ids}): give the id")
    return int(found[0]["id"])


@cron_app.command("list")
def cron_list(ctx: typer.Context, biz: BizOption = None, json_out: JsonOption = False) -> None:
    """List the business's crons."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = _all(client, _scope(cli, biz))
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(_render.records_table([_row(r) for r in rows], COLUMNS))
    cli.out.print(_render.counted(len(rows), "cron"))


@cron_app.command("add")
def cron_add(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The cron's name (at most 60 characters).")
    ],
    plan: Annotated[int, typer.Option("--plan", help="The plan to run.")],
    every: Annotated[
        str | None, typer.Option("--cron", help="A 5-field expression: 'min hour day month week'.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Run once: epoch seconds or an ISO time.")
    ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone.")] = None,
    var: VarOption = [],  # noqa: B006 - typer reads the default, never mutates it
    hosts: HostsOption = [],  # noqa: B006
    var_file: VarFileOption = [],  # noqa: B006
    start: Annotated[bool, typer.Option("--start", help="Start it now (else paused).")] = False,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a cron for a plan; it starts paused unless --start."""
    if (every is None) == (at is None):
        raise typer.BadParameter("give either --cron or --at", param_hint="--cron")
    cli = cli_context(ctx)
    scope = _scope(cli, biz)
    body: dict[str, Any] = {"job_plan_id": plan, "name": name, **scope}
    if every is not None:
        body["expression"] = every
    if at is not None:
        body["execute_time"] = _when(at)
    if tz:
        body["execute_time_zone"] = tz
    values = global_vars(var, hosts, var_file)
    if values:
        body["global_var_list"] = values
    with cli.client() as client:
        # a server that took a second cron of a name would leave the name ambiguous
        taken = _named(client, scope, name)
        if taken:
            held = taken[0]["id"]
            cli.fail(
                f"error: business {scope['bk_biz_id']} already has a cron named {name!r} "
                f"(id {held}): choose another name, or delete that cron first "
                f"(jobfleet cron delete {held})"
            )
        cron = client.save_cron(**body)
        if start:
            client.update_cron_status(int(cron["id"]), RUNNING, **scope)
            cron = client.get_cron_detail(int(cron["id"]), **scope)
    if json_out:
        cli.out.out(_render.to_json(cron))
        return
    cli.out.print(_render.records_table([_row(cron)], COLUMNS))


def _set_status(
    ctx: typer.Context, given: str, status: int, biz: int | None, json_out: bool
) -> None:
    cli = cli_context(ctx)
    scope = _scope(cli, biz)
    with cli.client() as client:
        cron_id = _cron_id(cli, client, scope, given)
        client.update_cron_status(cron_id, status, **scope)
        cron = client.get_cron_detail(cron_id, **scope)
    _render.show(cli.out, json_out, cron, _render.records_table([_row(cron)], COLUMNS))


@cron_app.command("start")
def cron_start(
    ctx: typer.Context,
    cron: CronArgument,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Start a paused cron."""
    _set_status(ctx, cron, RUNNING, biz, json_out)


@cron_app.command("pause")
def cron_pause(
    ctx: typer.Context,
    cron: CronArgument,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Pause a cron: it fires nothing until started again."""
    _set_status(ctx, cron, PAUSED, biz, json_out)


@cron_app.command("delete")
def cron_delete(
    ctx: typer.Context,
    cron: CronArgument,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a cron; the jobs it made stay."""
    cli = cli_context(ctx)
    scope = _scope(cli, biz)
    with cli.client() as client:
        cron_id = _cron_id(cli, client, scope, cron)
        data = client.delete_cron(cron_id, **scope)
    _render.show(cli.out, json_out, data, f"cron {cron_id} deleted")
