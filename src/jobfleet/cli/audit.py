"""``jobfleet audit``: who did what, when and where, from the server's audit log."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from jobfleet.cli import _render
from jobfleet.cli._context import JsonOption, cli_context
from jobfleet.sdk import parse_duration

PAGE = 1000


def parse_time(value: str, now: float | None = None) -> int:
    """Epoch ms of ``30m``/``2h``/``7d`` ago, an ISO date or time (local), or epoch ms."""
    text = value.strip()
    if text.isdecimal():
        return int(text)
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        pass
    try:
        # a bare number is epoch ms above, so a time ago needs its unit
        if not text[-1:].isalpha():
            raise ValueError(text)
        seconds = parse_duration(text, zero=True)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use a duration ago (30m, 2h, 7d), an ISO date/time or epoch ms"
        ) from None
    return int(((time.time() if now is None else now) - seconds) * 1000)


def _when(value: str | None, hint: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except typer.BadParameter as exc:
        raise typer.BadParameter(exc.message, param_hint=hint) from None


def audit_table(rows: list[dict[str, Any]], width: int | None = 80) -> Table:
    """One row per entry; each detail's JSON cut to ``width`` (None: whole, as in a pipe)."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("time", "user", "app", "action", "resource", "scope", "from", "detail"):
        table.add_column(column, overflow="fold")
    for row in rows:
        resource = str(row.get("resource_type") or "")
        if row.get("resource_id"):
            resource += f":{row['resource_id']}"
        scope = f"{row['scope_type']}:{row['scope_id']}" if row.get("scope_type") else "-"
        detail = row.get("detail")
        table.add_row(
            _render.format_time(row.get("create_time")),
            str(row.get("username") or "-"),
            str(row.get("app_code") or "-"),
            Text(str(row.get("action") or ""), style="bold"),
            resource or "-",
            scope,
            str(row.get("source_ip") or "-"),
            _render.first_line(json.dumps(detail, ensure_ascii=False), width) if detail else "",
        )
    return table


def audit(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option("--since", help="From this time: 30m, 2h, 7d ago, ISO date/time, epoch ms."),
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Up to this time (same forms as --since).")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only what this user did.")] = None,
    app_code: Annotated[
        str | None, typer.Option("--app", help="Only what went through this app.")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="Only this action; a trailing * matches a prefix."),
    ] = None,
    resource: Annotated[
        str | None,
        typer.Option("--resource", help="Only this resource: TYPE or TYPE:ID (e.g. script:ab12)."),
    ] = None,
    biz: Annotated[
        int | None, typer.Option("--biz", help="Only entries in this business scope.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=100_000, help="At most this many entries.")
    ] = 50,
    json_out: JsonOption = False,
) -> None:
    """Show the audit log, newest first (admins see every scope, others their own)."""
    cli = cli_context(ctx)
    resource_type, _, resource_id = (resource or "").partition(":")
    params: dict[str, Any] = {
        "create_time_start": _when(since, "--since"),
        "create_time_end": _when(until, "--until"),
        "username": user,
        "app_code": app_code,
        "action": action,
        "resource_type": resource_type or None,
        "resource_id": resource_id or None,
        "bk_biz_id": biz,
    }
    rows: list[dict[str, Any]] = []
    total = 0
    with cli.client() as client:
        while len(rows) < limit:
            page = client.search_audit(
                **params, start=len(rows), length=min(PAGE, limit - len(rows))
            )
            data = page.get("data") or []
            total = int(page.get("total") or 0)
            rows.extend(data)
            if not data or len(rows) >= total:
                break
    del rows[limit:]
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(audit_table(rows, 80 if cli.out.is_terminal else None))
    of = total if total > len(rows) else None
    cli.out.print(_render.counted(len(rows), "entry", of=of, plural="entries"))


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
