"""``jobfleet notify``: where a business hears about finished jobs (docs/notifications.md)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from jobfleet.cli import _render
from jobfleet.cli._context import BizOption, CliContext, JsonOption, ask_secret, cli_context
from jobfleet.cli._history import STATUS_NAMES

notify_app = typer.Typer(
    help="Job-end notifications of a business: signed webhooks and mails.", no_args_is_help=True
)

OnOption = Annotated[
    list[str],
    typer.Option(
        "--on",
        help="A final job status that triggers it: a number, a name as 'jobs --status' "
        "takes it (success, failed, …) or the API's (SUCCESS, FAIL, ABNORMAL_STATE, …); "
        "repeat for more.",
    ),
]
COLUMNS = ["id", "channel", "target", "statuses", "enabled", "has_secret", "last_modify_user"]


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")


def _biz(cli: CliContext, biz: int | None) -> int:
    return biz if biz is not None else cli.settings.biz


def _statuses(values: list[str]) -> list[int | str]:
    """Numbers, the names ``jobfleet jobs --status`` takes (``failed``, ``success``, …)
    as their codes, and anything else as the server's own names (``FAIL``)."""
    out: list[int | str] = []
    for value in values:
        text = value.strip()
        if text.isdecimal():
            out.append(int(text))
        elif text in STATUS_NAMES:
            out.append(int(STATUS_NAMES[text]))
        else:
            out.append(text)
    return out


@notify_app.command("list")
def notify_list(ctx: typer.Context, biz: BizOption = None, json_out: JsonOption = False) -> None:
    """List the business's notification configs (secrets are never shown)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_notify_configs(biz=_biz(cli, biz))
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(_render.records_table(rows, COLUMNS))
    cli.out.print(_render.counted(len(rows), "notification config"))


@notify_app.command("webhook")
def notify_webhook(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="The http(s) URL to POST to.")],
    on: OnOption,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            envvar="JOBFLEET_NOTIFY_SECRET",
            show_default=False,
            help="HMAC key the body is signed with (X-Jobfleet-Signature)."
            " Prompted for when not given.",
        ),
    ] = None,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a webhook: a signed JSON POST when a job ends in one of the --on statuses."""
    cli = cli_context(ctx)
    if secret is None:
        secret = ask_secret(cli, "Secret", "set JOBFLEET_NOTIFY_SECRET (or give --secret)")
    with cli.client() as client:
        row = client.create_notify_config(
            "webhook", url, _statuses(on), secret=secret, biz=_biz(cli, biz)
        )
    _render.show(
        cli.out, json_out, row, f"added webhook {row.get('id')} -> {url} on {row.get('statuses')}"
    )


@notify_app.command("email")
def notify_email(
    ctx: typer.Context,
    addresses: Annotated[list[str], typer.Argument(metavar="ADDRESS", help="Recipients.")],
    on: OnOption,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add an email notification (the server needs --smtp-host)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        row = client.create_notify_config("email", addresses, _statuses(on), biz=_biz(cli, biz))
    to = ", ".join(addresses)
    _render.show(
        cli.out, json_out, row, f"added email {row.get('id')} -> {to} on {row.get('statuses')}"
    )


def _switch(
    ctx: typer.Context, config_id: int, biz: int | None, enabled: bool, json_out: bool
) -> None:
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.update_notify_config(config_id, enabled=enabled, biz=_biz(cli, biz))
    done = "enabled" if enabled else "disabled"
    _render.show(cli.out, json_out, data, f"{done} notification config {config_id}")


ConfigId = Annotated[int, typer.Argument(metavar="ID", help="Config id.")]


@notify_app.command("enable")
def notify_enable(
    ctx: typer.Context, config_id: ConfigId, biz: BizOption = None, json_out: JsonOption = False
) -> None:
    """Turn a config back on."""
    _switch(ctx, config_id, biz, True, json_out)


@notify_app.command("disable")
def notify_disable(
    ctx: typer.Context, config_id: ConfigId, biz: BizOption = None, json_out: JsonOption = False
) -> None:
    """Turn a config off without deleting it."""
    _switch(ctx, config_id, biz, False, json_out)


@notify_app.command("delete")
def notify_delete(
    ctx: typer.Context, config_id: ConfigId, biz: BizOption = None, json_out: JsonOption = False
) -> None:
    """Delete a config; notifications already due are still delivered."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_notify_config(config_id, biz=_biz(cli, biz))
    _render.show(cli.out, json_out, data, Text(f"deleted notification config {config_id}"))
