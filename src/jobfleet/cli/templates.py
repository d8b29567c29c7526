"""``jobfleet template`` and ``jobfleet plan``: list them, and move templates in and out
as YAML files (docs/templates.md)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from jobfleet.cli import _render
from jobfleet.cli._context import (
    BizOption,
    CliContext,
    HostsOption,
    JsonOption,
    VarFileOption,
    VarOption,
    cli_context,
    describe_api_error,
    interrupted,
    lost_track,
)
from jobfleet.cli._input import read_text
from jobfleet.sdk import JobApiError

if TYPE_CHECKING:
    from jobfleet.sdk import JobClient

PAGE = 1000

template_app = typer.Typer(
    help="Job templates: list them, export them to YAML, import them from YAML.",
    no_args_is_help=True,
)
plan_app = typer.Typer(help="Execution plans of job templates.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(template_app, name="template")
    app.add_typer(plan_app, name="plan")


def _biz(cli: CliContext, biz: int | None) -> int:
    return biz if biz is not None else cli.settings.biz


def _all(fetch: Any) -> list[dict[str, Any]]:
    """Every item of a paged list: ``fetch(start, length)`` answers one page."""
    items: list[dict[str, Any]] = []
    while True:
        page = fetch(len(items), PAGE)
        data = page.get("data") or []
        items.extend(data)
        if not data or len(items) >= int(page.get("total") or 0):
            return items


@template_app.command("list")
def template_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only names containing this.")] = None,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the job templates of a business."""
    cli = cli_context(ctx)
    bk_biz_id = _biz(cli, biz)
    with cli.client() as client:
        rows = _all(
            lambda start, length: client.list_templates(
                name=name, start=start, length=length, biz=bk_biz_id
            )
        )
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(
        _render.records_table(
            rows, ["id", "name", "description", "last_modify_user", "last_modify_time"]
        )
    )
    cli.out.print(_render.counted(len(rows), "template", f" in business {bk_biz_id}"))


@template_app.command("export")
def template_export(
    ctx: typer.Context,
    template_id: Annotated[int, typer.Argument(metavar="ID", help="Template id.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write here instead of stdout."),
    ] = None,
    biz: BizOption = None,
) -> None:
    """Write a template and its plans as YAML (with no password in it)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        text = client.export_template(template_id, biz=_biz(cli, biz))
    if output is None:
        cli.out.file.write(text)
        cli.out.file.flush()
        return
    output.write_text(text, encoding="utf-8")
    cli.err.print(Text(f"template {template_id} written to {output}", style="dim"))


@template_app.command("import")
def template_import(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="A YAML file ('-' for stdin).")],
    update: Annotated[
        bool,
        typer.Option("--update", help="Replace the template of the same name if there is one."),
    ] = False,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a template and its plans from a YAML file (all or nothing)."""
    cli = cli_context(ctx)
    text = read_text(file, "FILE")
    from jobfleet.sdk import JobConflictError

    with cli.client() as client:
        try:
            data = client.import_template(text, update=update, biz=_biz(cli, biz))
        except JobConflictError as exc:
            if update:
                raise
            # the server speaks of its API's parameter (update=true); here it is a flag
            cli.fail(f"{describe_api_error(exc)}\n--update replaces it: {_import_again(file, biz)}")
    if json_out:
        cli.out.out(_render.to_json(data))
        return
    template = data.get("template") or {}
    verb = "created" if data.get("created") else "updated"
    cli.out.print(f"{verb} template {template.get('id')} ({template.get('name')})")
    for plan in data.get("plans") or []:
        verb = "created" if plan.get("created") else "updated"
        cli.out.print(f"  {verb} plan {plan.get('id')} ({plan.get('name')})")


def _import_again(file: str, biz: int | None) -> str:
    """The command that imports ``file`` again with --update, quoted to be pasted into a
    shell as it is: a name with spaces or quotes stays one argument, and one starting
    with '-' (but '-' itself, stdin) follows '--' so that it is not read as an option."""
    args = ["jobfleet", "template", "import", "--update"]
    if biz is not None:
        args += ["--biz", str(biz)]
    if file.startswith("-") and file != "-":
        args.append("--")
    return shlex.join([*args, file])


@plan_app.command("list")
def plan_list(
    ctx: typer.Context,
    template: Annotated[int, typer.Option("--template", "-t", help="Template id.")],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """List the plans of a template; 'needs sync' marks plans older than their template."""
    cli = cli_context(ctx)
    bk_biz_id = _biz(cli, biz)
    with cli.client() as client:
        rows = _all(lambda start, length: _plans(client, template, start, length, bk_biz_id))
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    table = [{**r, "needs_sync": bool(r.get("need_update"))} for r in rows]
    cli.out.print(
        _render.records_table(
            table, ["id", "name", "needs_sync", "last_modify_user", "last_modify_time"]
        )
    )
    cli.out.print(_render.counted(len(rows), "plan", f" of template {template}"))


def _plans(
    client: JobClient, template_id: int, start: int, length: int, biz: int
) -> dict[str, Any]:
    return client.list_plans(template_id, start=start, length=length, biz=biz)


def global_vars(
    values: list[str], host_values: list[str], value_files: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``--var name=value``, ``--hosts name=ip,cloud:ip`` and ``--var-file name=FILE`` as
    a global_var_list."""
    out: list[dict[str, Any]] = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not name=value", param_hint="--var")
        out.append({"name": name, "value": value})
    for item in value_files:
        # a password read from a file never shows in the process list, as --var's would
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"{item!r} is not name=FILE", param_hint="--var-file")
        text = read_text(path, "--var-file")
        out.append({"name": name, "value": text.removesuffix("\n").removesuffix("\r")})
    # the SDK's flow module brings httpx: loaded when a command runs, not for its help
    from jobfleet.sdk import parse_host

    for item in host_values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise typer.BadParameter(f"{item!r} is not name=ip,ip", param_hint="--hosts")
        out.append({"name": name, "server": {"ip_list": [parse_host(p) for p in value.split(",")]}})
    return out


@plan_app.command("run")
def plan_run(
    ctx: typer.Context,
    plan: Annotated[int, typer.Argument(metavar="PLAN", help="Plan id.")],
    var: VarOption = [],  # noqa: B006 - typer reads the default, never mutates it
    hosts: HostsOption = [],  # noqa: B006
    var_file: VarFileOption = [],  # noqa: B006
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the end.")] = True,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Run an execution plan; with --wait (default) show every step and exit 1 if it failed."""
    cli = cli_context(ctx)
    bk_biz_id = _biz(cli, biz)
    given = global_vars(var, hosts, var_file)
    with cli.client() as client:
        if given:
            _known_names_only(cli, client, plan, given, bk_biz_id)
        started = client.execute_job_plan(plan, global_var_list=given, bk_biz_id=bk_biz_id)
        job_id = int(started["job_instance_id"])
        if not wait:
            if json_out:
                cli.out.out(_render.to_json(started))
            else:
                cli.out.print(f"job {job_id} ({started.get('job_instance_name')}) started")
            return
        try:
            data = client.wait_for_job(job_id, biz=bk_biz_id)
            result = client.get_result(job_id, biz=bk_biz_id)
        except KeyboardInterrupt:
            interrupted(cli, job_id)
        except JobApiError as exc:
            lost_track(cli, exc, job_id)
    if json_out:
        cli.out.out(_render.to_json(data))
    else:
        cli.out.print(_render.job_overview(data))
        cli.out.print()
        cli.out.print(_render.host_table(result.hosts, width=_render.excerpt_width(cli.out)))
        cli.out.print(_render.result_summary(result))
    raise typer.Exit(0 if data["job_instance"]["status"] == 3 else 1)


def _known_names_only(
    cli: CliContext, client: JobClient, plan: int, given: list[dict[str, Any]], biz: int
) -> None:
    """execute_job_plan ignores values for variables the plan lacks, as bk-job does; from
    the command line such a name is a typo that would leave the plan's value in place."""
    detail = client.get_job_plan_detail(plan, bk_biz_id=biz)
    names = [str(v.get("name")) for v in detail.get("global_var_list") or []]
    unknown = list(dict.fromkeys(g["name"] for g in given if g["name"] not in names))
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        cli.fail(
            f"error: plan {plan} has no variable named {listed}; "
            f"its variables: {', '.join(names) or '(none)'}"
        )
