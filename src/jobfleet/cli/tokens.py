"""``jobfleet token``: the personal API tokens of the user the CLI acts as.

A token is a bearer secret (``Authorization: Bearer jfp_…``) that acts as its user
until it expires; the server keeps only its hash, so ``create`` prints it once.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from jobfleet.cli import _render
from jobfleet.cli._context import JsonOption, cli_context
from jobfleet.sdk import parse_duration

token_app = typer.Typer(
    help="Your personal API tokens (bearer secrets that act as you).", no_args_is_help=True
)

# the server refuses tokens that live longer than a year
MAX_TTL = 365 * 86400


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    ttl: Annotated[
        str, typer.Option("--ttl", help="Lifetime: seconds, or e.g. 30m, 24h, 30d (at most 365d).")
    ] = "30d",
    name: Annotated[str, typer.Option("--name", help="What the token is for.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Create a token for yourself; its secret is printed this once (to stdout alone)."""
    try:
        seconds = int(parse_duration(ttl, whole=True))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from None
    if seconds > MAX_TTL:
        raise typer.BadParameter(f"{ttl!r} is longer than a year", param_hint="--ttl")
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.create_personal_token(ttl_seconds=seconds, note=name)
    if json_out:
        cli.out.out(_render.to_json(data))
        return
    cli.out.out(str(data.get("token")))
    expires = _render.format_time(data.get("expires_at"))
    cli.err.print(
        Text(
            f"token {data.get('id')} created, expires {expires}; "
            "it is shown only now: keep it somewhere safe",
            style="dim",
        )
    )


@token_app.command("list")
def token_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List your tokens (never their secrets)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_personal_tokens()
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    cli.out.print(
        _render.records_table(
            [
                {
                    "id": r.get("id"),
                    "name": r.get("note") or "",
                    "created": _render.format_time(r.get("create_time")),
                    "expires": _render.format_time(r.get("expires_at")),
                }
                for r in rows
            ],
            ["id", "name", "created", "expires"],
        )
    )
    cli.out.print(_render.counted(len(rows), "token"))


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(metavar="ID", help="Token id (see token list).")],
    json_out: JsonOption = False,
) -> None:
    """Revoke one of your tokens; it stops working at once."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.revoke_personal_token(token_id)
    if json_out:
        cli.out.out(_render.to_json(data))
    else:
        cli.out.print(f"revoked token {token_id}")
