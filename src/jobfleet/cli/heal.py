"""``jobfleet heal``: alert-driven self-healing rules and their decisions
(docs/self-healing.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobfleet.cli import _render
from jobfleet.cli._context import BizOption, CliContext, JsonOption, ask_secret, cli_context

if TYPE_CHECKING:
    from rich.text import Text

heal_app = typer.Typer(
    help="Self-healing: alerts from monitoring start a plan, with convergence.",
    no_args_is_help=True,
)

RULE_COLUMNS = [
    "id",
    "name",
    "enabled",
    "dry_run",
    "job_plan_id",
    "host_label",
    "max_hosts",
    "rate_limit",
    "cooldown",
    "host_cooldown",
]
DECISION_COLUMNS = [
    "id",
    "rule_id",
    "alertname",
    "alert_status",
    "decision",
    "job_instance_id",
    "job_status",
    "hosts",
    "reason",
]
RuleId = Annotated[int, typer.Argument(metavar="RULE_ID", help="Rule id.")]


def register(app: typer.Typer) -> None:
    app.add_typer(heal_app, name="heal")


def _biz(cli: CliContext, biz: int | None) -> int:
    return biz if biz is not None else cli.settings.biz


def _show(
    cli: CliContext,
    rows: list[dict[str, Any]],
    columns: list[str],
    json_out: bool,
    footer: Text,
) -> None:
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(_render.records_table(rows, columns))
    cli.out.print(footer)


@heal_app.command("rules")
def heal_rules(ctx: typer.Context, biz: BizOption = None, json_out: JsonOption = False) -> None:
    """List the business's rules (secrets are never shown)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_heal_rules(biz=_biz(cli, biz))
    _show(cli, rows, RULE_COLUMNS, json_out, _render.counted(len(rows), "rule"))


@heal_app.command("create")
def heal_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Rule name.")],
    plan: Annotated[int, typer.Option("--plan", help="The plan (job_plan_id) to start.")],
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="JOBFLEET_HEAL_SECRET",
            show_default=False,
            help="The webhook's bearer token / HMAC key (16+ characters)."
            " Prompted for when not given.",
        ),
    ] = None,
    alertname: Annotated[list[str] | None, typer.Option(help="Alert names it takes.")] = None,
    severity: Annotated[list[str] | None, typer.Option(help="Severities it takes.")] = None,
    variables: Annotated[
        str, typer.Option(help='Plan variables as JSON: {"name": "{{labels.x}}"}.')
    ] = "{}",
    host_variable: Annotated[str, typer.Option(help="The plan's host variable.")] = "",
    host_label: Annotated[str, typer.Option(help="Alert label naming the host.")] = "instance",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Record, start nothing.")] = False,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a rule; prints the webhook path to give the monitoring system."""
    cli = cli_context(ctx)
    if secret is None:
        secret = ask_secret(cli, "Secret", "set JOBFLEET_HEAL_SECRET (or give --secret)")
    with cli.client() as client:
        row = client.create_heal_rule(
            name,
            plan,
            secret,
            match={"alertname": alertname or [], "severity": severity or []},
            variables=json.loads(variables),
            host_variable=host_variable,
            host_label=host_label,
            dry_run=dry_run,
            biz=_biz(cli, biz),
        )
    where = row.get("webhook_path")
    _render.show(cli.out, json_out, row, f"added rule {row.get('id')}: POST alerts to {where}")


def _switch(
    ctx: typer.Context, rule_id: int, biz: int | None, json_out: bool, **change: bool
) -> None:
    cli = cli_context(ctx)
    with cli.client() as client:
        row = client.update_heal_rule(rule_id, biz=_biz(cli, biz), **change)
    state = f"enabled={row.get('enabled')} dry_run={row.get('dry_run')}"
    _render.show(cli.out, json_out, row, f"rule {rule_id}: {state}")


@heal_app.command("on")
def heal_on(
    ctx: typer.Context, rule_id: RuleId, biz: BizOption = None, json_out: JsonOption = False
) -> None:
    """Turn a rule on."""
    _switch(ctx, rule_id, biz, json_out, enabled=True)


@heal_app.command("off")
def heal_off(
    ctx: typer.Context, rule_id: RuleId, biz: BizOption = None, json_out: JsonOption = False
) -> None:
    """The off switch: alerts are recorded as skipped, nothing starts."""
    _switch(ctx, rule_id, biz, json_out, enabled=False)


@heal_app.command("dry-run")
def heal_dry_run(
    ctx: typer.Context,
    rule_id: RuleId,
    off: Annotated[bool, typer.Option("--off", help="Leave dry-run mode.")] = False,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Record what the rule would start, without starting it."""
    _switch(ctx, rule_id, biz, json_out, dry_run=not off)


@heal_app.command("delete")
def heal_delete(
    ctx: typer.Context, rule_id: RuleId, biz: BizOption = None, json_out: JsonOption = False
) -> None:
    """Delete a rule (its decisions stay)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_heal_rule(rule_id, biz=_biz(cli, biz))
    _render.show(cli.out, json_out, data, f"deleted rule {rule_id}")


@heal_app.command("decisions")
def heal_decisions(
    ctx: typer.Context,
    rule: Annotated[int | None, typer.Option("--rule", help="Only this rule's.")] = None,
    decision: Annotated[
        str | None,
        typer.Option(help="started, converged, skipped, refused or dry_run."),
    ] = None,
    length: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """What became of each alert, with the job it started and that job's status."""
    cli = cli_context(ctx)
    with cli.client() as client:
        page = client.list_heal_decisions(
            rule_id=rule, decision=decision, length=length, biz=_biz(cli, biz)
        )
    rows = list(page.get("data") or [])
    total = int(page.get("total") or len(rows))
    of = total if total > len(rows) else None
    _show(cli, rows, DECISION_COLUMNS, json_out, _render.counted(len(rows), "decision", of=of))
