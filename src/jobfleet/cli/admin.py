"""``jobfleet admin``: apps, users and grants, businesses, enroll tokens, hosts, agents."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.text import Text

from jobfleet.cli import _render
from jobfleet.cli._context import JsonOption, ask_secret, cli_context
from jobfleet.sdk import parse_duration

admin_app = typer.Typer(
    help="Administer the server (needs a user with is_admin).", no_args_is_help=True
)
apps = typer.Typer(help="API apps: the bk_app_code/bk_app_secret pairs clients use.")
users = typer.Typer(help="Users and the business scopes they may act in.")
businesses = typer.Typer(help="Businesses (bk_biz_id).")
biz_sets = typer.Typer(help="Business sets: groups of businesses granted as one scope.")
tokens = typer.Typer(help="One-time tokens agents enroll with.")
host_cmds = typer.Typer(help="Host inventory.")
agents = typer.Typer(help="Enrolled agents.")
for group, group_name in (
    (apps, "app"),
    (users, "user"),
    (businesses, "biz"),
    (biz_sets, "biz-set"),
    (tokens, "token"),
    (host_cmds, "host"),
    (agents, "agent"),
):
    group.info.no_args_is_help = True
    admin_app.add_typer(group, name=group_name)


# --- apps -------------------------------------------------------------------------


@apps.command("create")
def app_create(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(metavar="CODE", help="The new bk_app_code.")],
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="What the app is for.")
    ] = None,
    users: Annotated[
        str,
        typer.Option("--users", help="Users the app may name: any, or a list such as U1,U2."),
    ] = "any",
    biz: Annotated[
        str,
        typer.Option("--biz", help="Businesses the app may touch: any, or a list such as 2,3."),
    ] = "any",
    admin: Annotated[
        bool,
        typer.Option("--admin", help="Let the app reach the administration routes."),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Create an app and print its secret (shown this once only)."""
    cli = cli_context(ctx)
    allowed_users = _names(users, "--users")
    allowed_biz = _names(biz, "--biz")
    try:
        biz_ids = None if allowed_biz is None else [int(b) for b in allowed_biz]
    except ValueError:
        raise typer.BadParameter("business ids are numbers, e.g. 2,3", param_hint="--biz") from None
    with cli.client() as client:
        data = client.create_app(
            code, description=description, users=allowed_users, biz=biz_ids, admin=admin
        )
    if json_out:
        cli.out.out(_render.to_json(data))
    else:
        cli.out.out(f"app_code: {data.get('app_code', code)}\napp_secret: {data.get('app_secret')}")
    cli.err.print(Text("store the secret now: it cannot be shown again", style="yellow"))


def _names(value: str, hint: str) -> list[str] | None:
    """``any`` is None; else the comma-separated names, none of them empty."""
    if value.strip() == "any":
        return None
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise typer.BadParameter("give any, or names separated by commas", param_hint=hint)
    return names


@apps.command("list")
def app_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List apps."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_apps()
    _render.show(
        cli.out,
        json_out,
        rows,
        _render.records_table(
            rows,
            [
                "app_code",
                "is_admin",
                "allowed_users",
                "allowed_biz",
                "description",
                "disabled",
                "create_time",
            ],
        ),
        _render.counted(len(rows), "app"),
    )


@apps.command("delete")
def app_delete(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(metavar="CODE", help="The bk_app_code to delete.")],
    json_out: JsonOption = False,
) -> None:
    """Delete an app; clients using it are refused from then on."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_app(code)
    _render.show(cli.out, json_out, data, f"deleted app {code}")


# --- users and grants ---------------------------------------------------------------


@users.command("create")
def user_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Username.")],
    admin: Annotated[
        bool | None,
        typer.Option(
            "--admin/--no-admin",
            help="Make the user an administrator, or no longer one (also an existing "
            "user). Without either, a new user is not one, and one that exists is refused.",
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Create a user, or change whether an existing one is an administrator."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.create_user(name, is_admin=admin)
    role = "administrator" if data.get("is_admin") else "user"
    _render.show(cli.out, json_out, data, f"user {data.get('username', name)}: {role}")


@users.command("list")
def user_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List users and their scopes."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_users()
    _render.show(
        cli.out,
        json_out,
        rows,
        _render.records_table(rows, ["username", "is_admin", "scopes"]),
        _render.counted(len(rows), "user"),
    )


def _scope_args(biz: int | None, scope_type: str | None, scope_id: str | None) -> tuple[str, str]:
    if biz is not None and (scope_type is None and scope_id is None):
        return "biz", str(biz)
    if biz is None and scope_type is not None and scope_id is not None:
        return scope_type, scope_id
    raise typer.BadParameter(
        "give --biz N, or both --scope-type and --scope-id", param_hint="--biz"
    )


ScopeBiz = Annotated[int | None, typer.Option("--biz", help="Business id.")]
ScopeType = Annotated[
    str | None, typer.Option("--scope-type", help="biz or biz_set (with --scope-id).")
]
ScopeId = Annotated[str | None, typer.Option("--scope-id", help="Scope id (with --scope-type).")]


@users.command("grant")
def user_grant(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Username.")],
    biz: ScopeBiz = None,
    scope_type: ScopeType = None,
    scope_id: ScopeId = None,
    json_out: JsonOption = False,
) -> None:
    """Let a user act in a business (or business set)."""
    kind, ident = _scope_args(biz, scope_type, scope_id)
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.grant_scope(name, ident, scope_type=kind)
    _render.show(cli.out, json_out, data, f"granted {name} {kind} {ident}")


@users.command("revoke")
def user_revoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Username.")],
    biz: ScopeBiz = None,
    scope_type: ScopeType = None,
    scope_id: ScopeId = None,
    json_out: JsonOption = False,
) -> None:
    """Take a business (or business set) away from a user."""
    kind, ident = _scope_args(biz, scope_type, scope_id)
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.revoke_scope(name, ident, scope_type=kind)
    _render.show(cli.out, json_out, data, f"revoked {kind} {ident} from {name}")


@users.command("tokens")
def user_tokens(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Username.")],
    json_out: JsonOption = False,
) -> None:
    """List a user's personal tokens (never their secrets)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_user_tokens(name)
    table = [
        {
            "id": r.get("id"),
            "name": r.get("note") or "",
            "created": _render.format_time(r.get("create_time")),
            "expires": _render.format_time(r.get("expires_at")),
        }
        for r in rows
    ]
    _render.show(
        cli.out,
        json_out,
        rows,
        _render.records_table(table, ["id", "name", "created", "expires"]),
        _render.counted(len(rows), "token", f" of {name}"),
    )


@users.command("revoke-token")
def user_revoke_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Username.")],
    token_id: Annotated[
        int | None,
        typer.Argument(metavar="ID", help="Token id (see admin user tokens)."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Revoke every token of the user.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Revoke a user's personal token, or all of them with --all; they stop working at once."""
    if (token_id is None) == (not every):
        raise typer.BadParameter("give a token ID, or --all", param_hint="ID")
    cli = cli_context(ctx)
    with cli.client() as client:
        if every:
            data = client.revoke_user_tokens(name)
            revoked = int(data.get("revoked") or 0)
            done = (
                f"revoked {revoked} {_render.noun_for(revoked, 'token')} of {name}"
                if revoked
                else f"no tokens of {name} revoked: it had none"
            )
        else:
            assert token_id is not None
            data = client.revoke_user_token(name, token_id)
            done = f"revoked token {token_id} of {name}"
    _render.show(cli.out, json_out, data, done)


# --- businesses ---------------------------------------------------------------------


@businesses.command("create")
def biz_create(
    ctx: typer.Context,
    biz_id: Annotated[int, typer.Argument(metavar="ID", help="bk_biz_id.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Display name.")],
    json_out: JsonOption = False,
) -> None:
    """Create a business."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.create_business(biz_id, name)
    made = f"created business {data.get('bk_biz_id', biz_id)} ({data.get('name', name)})"
    _render.show(cli.out, json_out, data, made)


@businesses.command("list")
def biz_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List businesses."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_businesses()
    _render.show(
        cli.out,
        json_out,
        rows,
        _render.records_table(rows, ["bk_biz_id", "name"]),
        _render.counted(len(rows), "business", plural="businesses"),
    )


@biz_sets.command("create")
def biz_set_create(
    ctx: typer.Context,
    set_id: Annotated[int, typer.Argument(metavar="ID", help="bk_biz_set_id, 8000000-9999999.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Display name.")],
    members: Annotated[
        list[int], typer.Option("--biz", help="A member business (repeat for more).")
    ],
    json_out: JsonOption = False,
) -> None:
    """Create a business set; grant it with `admin user grant --scope-type biz_set`."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.create_biz_set(set_id, name, members)
    held = ", ".join(str(b) for b in data.get("bk_biz_ids", members))
    _render.show(cli.out, json_out, data, f"created business set {set_id} ({name}): {held}")


@biz_sets.command("list")
def biz_set_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List business sets and their members."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_biz_sets()
    table = _render.records_table(rows, ["bk_biz_set_id", "name", "bk_biz_ids"])
    _render.show(cli.out, json_out, rows, table, _render.counted(len(rows), "business set"))


# --- enroll tokens, hosts, agents -----------------------------------------------------


@tokens.command("create")
def token_create(
    ctx: typer.Context,
    biz: Annotated[
        int | None, typer.Option("--biz", help="Business the enrolled hosts join.")
    ] = None,
    uses: Annotated[
        int | None, typer.Option("--uses", min=1, help="How many agents may use it.")
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option("--ttl", help="Lifetime: seconds, or e.g. 30m, 24h, 7d (default: none)."),
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Free text to remember it by.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Create an enroll token; only the token goes to stdout, for scripts."""
    try:
        seconds = int(parse_duration(ttl, whole=True)) if ttl is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from None
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.create_enroll_token(bk_biz_id=biz, uses=uses, ttl_seconds=seconds, note=note)
    if json_out:
        cli.out.out(_render.to_json(data))
        return
    cli.out.out(str(data.get("token")))
    limits = [
        f"biz {biz}" if biz is not None else "",
        f"{uses} {_render.noun_for(uses, 'use')}" if uses else "",
    ]
    limits.append(f"expires in {seconds}s" if seconds else "")
    detail = ", ".join(x for x in limits if x)
    cli.err.print(Text(f"enroll token created{f' ({detail})' if detail else ''}", style="dim"))


@host_cmds.command("add")
def host_add(
    ctx: typer.Context,
    ip: Annotated[str, typer.Argument(metavar="IP", help="Host IP.")],
    biz: Annotated[
        int | None, typer.Option("--biz", help="Business (default: the global --biz).")
    ] = None,
    cloud: Annotated[int, typer.Option("--cloud", min=0, help="Cloud area id.")] = 0,
    hostname: Annotated[
        str | None, typer.Option("--hostname", help="Host name to record for it.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Register a host before its agent enrolls."""
    cli = cli_context(ctx)
    bk_biz_id = biz if biz is not None else cli.settings.biz
    with cli.client() as client:
        data = client.add_host(ip, bk_biz_id=bk_biz_id, bk_cloud_id=cloud, hostname=hostname)
    _render.show(
        cli.out,
        json_out,
        data,
        f"added host {data.get('bk_host_id', '?')}: {ip} (biz {bk_biz_id}, cloud {cloud})",
    )


@agents.command("revoke")
def agent_revoke(
    ctx: typer.Context,
    agent_id: Annotated[
        str, typer.Argument(metavar="AGENT_ID", help="The agent's id (see jobfleet hosts).")
    ],
    json_out: JsonOption = False,
) -> None:
    """Revoke an agent's credential; it can no longer connect."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.revoke_agent(agent_id)
    _render.show(cli.out, json_out, data, f"revoked agent {agent_id}")


@users.command("passwd")
def user_passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Username.")],
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input.")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Set a user's console password (prompted, never taken from the command line)."""
    cli = cli_context(ctx)
    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = ask_secret(
            cli, "New password", "pipe it with --stdin", confirm=True
        )
    with cli.client() as client:
        data = client.set_password(name, password)
    _render.show(cli.out, json_out, data, f"password set for {data.get('username', name)}")
