"""``jobfleet topo``: a business's sets and modules and the hosts in them, dynamic groups,
and the host whitelist (docs/topology.md)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from jobfleet.cli import _render
from jobfleet.cli._context import BizOption, CliContext, JsonOption, cli_context
from jobfleet.cli._input import read_text

if TYPE_CHECKING:
    from jobfleet.sdk import JobClient

topo_app = typer.Typer(
    help="Business topology (sets, modules, hosts), dynamic groups and the host whitelist.",
    no_args_is_help=True,
)
group_app = typer.Typer(help="Dynamic groups: saved host filters targets can name.")
whitelist_app = typer.Typer(help="Hosts other businesses may use (administrators).")
for sub, sub_name in ((group_app, "group"), (whitelist_app, "whitelist")):
    sub.info.no_args_is_help = True
    topo_app.add_typer(sub, name=sub_name)

WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        "-w",
        help="A condition 'FIELD OP [VALUE]', e.g. 'labels.env equal prod' or "
        "'hostname prefix web-'; all must hold; repeatable.",
    ),
]
FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        # --help reads Rich markup: a bracket that could open a tag is escaped
        help='The filter as JSON, or @FILE: a list of conditions, or {"any": \\[lists]}.',
    ),
]


def register(app: typer.Typer) -> None:
    app.add_typer(topo_app, name="topo")


def _biz(cli: CliContext, biz: int | None) -> int:
    return biz if biz is not None else cli.settings.biz


# --- the tree ---------------------------------------------------------------------------


def _host_label(host: dict[str, Any] | None, host_id: int) -> Text:
    if host is None:
        return Text(f"host {host_id}")
    alive = bool(host.get("alive"))
    label = Text("● " if alive else "○ ", style="green" if alive else "red")
    label.append(str(host.get("ip") or ""))
    if host.get("ipv6") and host.get("ipv6") != host.get("ip"):
        label.append(f" {host['ipv6']}")
    if host.get("hostname"):
        label.append(f"  {host['hostname']}", style="bold")
    label.append(f"  (id {host_id})", style="dim")
    labels = host.get("labels") or {}
    if labels:
        label.append("  " + " ".join(f"{k}={v}" for k, v in sorted(labels.items())), style="cyan")
    return label


def topology_tree(data: dict[str, Any]) -> Tree:
    hosts = {h["bk_host_id"]: h for h in data.get("hosts") or []}
    name = f" {data['name']}" if data.get("name") else ""
    tree = Tree(Text(f"business {data.get('bk_biz_id')}{name}", style="bold"))
    for topo_set in data.get("sets") or []:
        branch = tree.add(Text(f"set {topo_set['name']}  (id {topo_set['id']})", style="magenta"))
        for module in topo_set.get("modules") or []:
            ids = module.get("host_ids") or []
            held = f"{len(ids)} {_render.noun_for(len(ids), 'host')}"
            leaf = branch.add(Text(f"module {module['name']}  (id {module['id']}, {held})", "blue"))
            for host_id in ids:
                leaf.add(_host_label(hosts.get(host_id), host_id))
    idle = data.get("idle_host_ids") or []
    if idle:
        held = f"{len(idle)} {_render.noun_for(len(idle), 'host')}"
        branch = tree.add(Text(f"idle  ({held} in no module)", style="yellow"))
        for host_id in idle:
            branch.add(_host_label(hosts.get(host_id), host_id))
    return tree


@topo_app.command("list")
def topo_list(ctx: typer.Context, biz: BizOption = None, json_out: JsonOption = False) -> None:
    """Show the sets and modules of a business with the hosts in each."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.get_topology(biz=_biz(cli, biz))
    if json_out:
        cli.out.out(_render.to_json(data))
        return
    cli.out.print(topology_tree(data))


@topo_app.command("add-set")
def add_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Set name.")],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a set."""
    cli = cli_context(ctx)
    with cli.client() as client:
        node = client.create_set(name, biz=_biz(cli, biz))
    _render.show(cli.out, json_out, node, f"created set {node.get('id')} ({node.get('name')})")


@topo_app.command("add-module")
def add_module(
    ctx: typer.Context,
    set_id: Annotated[int, typer.Argument(metavar="SET_ID", help="The set's id.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="Module name.")],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a module in a set."""
    cli = cli_context(ctx)
    with cli.client() as client:
        node = client.create_module(set_id, name, biz=_biz(cli, biz))
    made = f"created module {node.get('id')} ({node.get('name')}) in set {set_id}"
    _render.show(cli.out, json_out, node, made)


@topo_app.command("delete-set")
def delete_set(
    ctx: typer.Context,
    set_id: Annotated[int, typer.Argument(metavar="SET_ID", help="The set's id.")],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a set and its modules (refused while a host sits in one)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_set(set_id, biz=_biz(cli, biz))
    _render.show(cli.out, json_out, data, f"deleted set {set_id}")


@topo_app.command("delete-module")
def delete_module(
    ctx: typer.Context,
    module_id: Annotated[
        int, typer.Argument(metavar="MODULE_ID", help="The module's id.")
    ],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a module (refused while a host sits in it)."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_module(module_id, biz=_biz(cli, biz))
    _render.show(cli.out, json_out, data, f"deleted module {module_id}")


def _host_ids(cli: CliContext, client: JobClient, hosts: list[str], biz: int) -> list[int]:
    """Host ids for arguments that are ids or IP addresses of the business's hosts."""
    ids = [int(h) for h in hosts if h.isdecimal()]
    wanted = [h for h in hosts if not h.isdecimal()]
    if wanted:
        known: dict[str, int] = {}
        for host in client.list_hosts(bk_biz_id=biz):
            for address in (host.get("ip"), host.get("ipv6")):
                if address:
                    known.setdefault(str(address), int(host["bk_host_id"]))
        missing = [h for h in wanted if h not in known]
        if missing:
            cli.fail(f"no host {', '.join(missing)} in business {biz}")
        ids += [known[h] for h in wanted]
    return ids


@topo_app.command("move")
def move(
    ctx: typer.Context,
    hosts: Annotated[
        list[str], typer.Argument(metavar="HOST", help="Host ids or IP addresses.")
    ],
    module: Annotated[
        list[int] | None, typer.Option("--module", "-m", help="Module id; repeatable.")
    ] = None,
    add: Annotated[
        bool, typer.Option("--add", help="Keep the hosts' other modules (default: replace them).")
    ] = False,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Put hosts in modules; with no --module they leave every module (idle)."""
    cli = cli_context(ctx)
    bk_biz_id = _biz(cli, biz)
    if add and not module:
        raise typer.BadParameter("--add needs at least one --module", param_hint="--add")
    with cli.client() as client:
        ids = _host_ids(cli, client, hosts, bk_biz_id)
        data = client.move_hosts(ids, module or [], increment=add, biz=bk_biz_id)
    moved_ids = data.get("bk_host_ids") or ids
    moved = f"{_render.noun_for(len(moved_ids), 'host')} {', '.join(str(i) for i in moved_ids)}"
    modules = module or []
    where = (
        f"{_render.noun_for(len(modules), 'module')} {', '.join(str(m) for m in modules)}"
        if modules
        else "no module (idle)"
    )
    _render.show(cli.out, json_out, data, f"{moved} {'added to' if add else 'now in'} {where}")


# --- dynamic groups -----------------------------------------------------------------


def _filter(cli: CliContext, where: list[str] | None, raw: str | None) -> Any:
    if bool(where) == bool(raw):
        cli.fail("give the filter as --where conditions or as --filter JSON (one of them)")
    if raw is not None:
        text = read_text(raw[1:], "--filter") if raw.startswith("@") else raw
        try:
            return json.loads(text)
        except ValueError as exc:
            cli.fail(f"--filter is not JSON: {exc}")
    # the filter grammar compiles its patterns on import: only for a filter to parse
    from jobfleet.sdk import condition_from_text

    try:
        return [condition_from_text(w) for w in where or []]
    except ValueError as exc:
        cli.fail(str(exc))


def _filter_text(host_filter: Any) -> str:
    groups = host_filter.get("any") if isinstance(host_filter, dict) else [host_filter]
    parts = []
    for group in groups or []:
        conds = [
            f"{c.get('field')} {c.get('op')} {_value_text(c.get('value'))}".rstrip() for c in group
        ]
        parts.append(" and ".join(conds))
    return " OR ".join(f"({p})" if len(parts) > 1 else p for p in parts)


def _value_text(value: Any) -> str:
    if value is True:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _hosts_table(cli: CliContext, data: dict[str, Any]) -> None:
    hosts = data.get("hosts") or []
    total = int(data.get("total") or len(hosts))
    of = total if total > len(hosts) else None
    cli.out.print(_render.hosts_table(hosts))
    cli.out.print(_render.counted(len(hosts), "matching host", of=of))


@group_app.command("list")
def group_list(ctx: typer.Context, biz: BizOption = None, json_out: JsonOption = False) -> None:
    """List the dynamic groups of a business."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_dynamic_groups(biz=_biz(cli, biz))
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    table = [{**r, "filter": _filter_text(r.get("filter"))} for r in rows]
    cli.out.print(_render.records_table(table, ["id", "name", "filter", "description"]))
    cli.out.print(_render.counted(len(rows), "dynamic group"))


@group_app.command("add")
def group_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Group name.")],
    where: WhereOption = None,
    filter_json: FilterOption = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="What the group is for.")
    ] = None,
    group_id: Annotated[
        str | None, typer.Option("--id", help="The group's id (default: made up).")
    ] = None,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Save a filter as a dynamic group; targets name it by its id."""
    cli = cli_context(ctx)
    host_filter = _filter(cli, where, filter_json)
    with cli.client() as client:
        group = client.create_dynamic_group(
            name, host_filter, description=description, group_id=group_id, biz=_biz(cli, biz)
        )
    made = f"created dynamic group {group.get('id')} ({group.get('name')})"
    _render.show(cli.out, json_out, group, made)


@group_app.command("update")
def group_update(
    ctx: typer.Context,
    group_id: Annotated[
        str, typer.Argument(metavar="ID", help="The dynamic group's id.")
    ],
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    where: WhereOption = None,
    filter_json: FilterOption = None,
    description: Annotated[
        str | None, typer.Option("--description", "-d", help="What the group is for.")
    ] = None,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Change a dynamic group's name, filter or description."""
    cli = cli_context(ctx)
    host_filter = _filter(cli, where, filter_json) if where or filter_json else None
    with cli.client() as client:
        group = client.update_dynamic_group(
            group_id,
            name=name,
            host_filter=host_filter,
            description=description,
            biz=_biz(cli, biz),
        )
    changed = f"updated dynamic group {group.get('id')} ({group.get('name')})"
    _render.show(cli.out, json_out, group, changed)


@group_app.command("show")
def group_show(
    ctx: typer.Context,
    group_id: Annotated[
        str, typer.Argument(metavar="ID", help="The dynamic group's id.")
    ],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show a dynamic group and the hosts it matches now."""
    cli = cli_context(ctx)
    bk_biz_id = _biz(cli, biz)
    with cli.client() as client:
        group = client.get_dynamic_group(group_id, biz=bk_biz_id)
        matched = client.dynamic_group_hosts(group_id, biz=bk_biz_id)
    if json_out:
        cli.out.out(_render.to_json({**group, "hosts": matched.get("hosts") or []}))
        return
    cli.out.print(Text(f"{group.get('name')}  (id {group.get('id')})", style="bold"))
    cli.out.print(f"filter: {_filter_text(group.get('filter'))}")
    _hosts_table(cli, matched)


@group_app.command("preview")
def group_preview(
    ctx: typer.Context,
    where: WhereOption = None,
    filter_json: FilterOption = None,
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show the hosts a filter matches, without saving it."""
    cli = cli_context(ctx)
    host_filter = _filter(cli, where, filter_json)
    with cli.client() as client:
        matched = client.preview_dynamic_group(host_filter, biz=_biz(cli, biz))
    if json_out:
        cli.out.out(_render.to_json(matched))
        return
    _hosts_table(cli, matched)


@group_app.command("delete")
def group_delete(
    ctx: typer.Context,
    group_id: Annotated[
        str, typer.Argument(metavar="ID", help="The dynamic group's id.")
    ],
    biz: BizOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a dynamic group."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_dynamic_group(group_id, biz=_biz(cli, biz))
    _render.show(cli.out, json_out, data, f"deleted dynamic group {group_id}")


# --- host whitelist -------------------------------------------------------------------


@whitelist_app.command("list")
def whitelist_list(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """List whitelist entries."""
    cli = cli_context(ctx)
    with cli.client() as client:
        rows = client.list_host_whitelist()
    if json_out:
        cli.out.out(_render.to_json(rows))
        return
    columns = ["id", "bk_host_id", "ip", "host_bk_biz_id", "biz_ids", "action_scopes", "remark"]
    cli.out.print(_render.records_table(rows, columns))
    cli.out.print(_render.counted(len(rows), "whitelist entry", plural="whitelist entries"))


@whitelist_app.command("add")
def whitelist_add(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(metavar="HOST", help="Host id or IP address.")],
    for_biz: Annotated[
        list[int],
        typer.Option("--for-biz", help="A business that may use the host; repeatable."),
    ],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", help="SCRIPT_EXECUTE or FILE_DISTRIBUTION; repeatable (default: both)."
        ),
    ] = None,
    cloud: Annotated[int, typer.Option("--cloud", min=0, help="Cloud area of an IP.")] = 0,
    remark: Annotated[
        str | None, typer.Option("--remark", help="Why the entry exists.")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Let businesses use a host that belongs to another one."""
    cli = cli_context(ctx)
    by_id = host.isdecimal()
    with cli.client() as client:
        entry = client.add_host_whitelist(
            for_biz,
            host_id=int(host) if by_id else None,
            ip=None if by_id else host,
            bk_cloud_id=cloud,
            action_scopes=scope,
            remark=remark,
        )
    scopes = ", ".join(entry.get("action_scopes") or [])
    bizs = ", ".join(str(b) for b in entry.get("biz_ids") or [])
    _render.show(
        cli.out,
        json_out,
        entry,
        f"whitelist entry {entry.get('id')}: host {entry.get('bk_host_id')} ({entry.get('ip')}) "
        f"for business {bizs}: {scopes}",
    )


@whitelist_app.command("delete")
def whitelist_delete(
    ctx: typer.Context,
    entry_id: Annotated[
        int, typer.Argument(metavar="ENTRY_ID", help="The entry's id (see whitelist list).")
    ],
    json_out: JsonOption = False,
) -> None:
    """Delete a whitelist entry."""
    cli = cli_context(ctx)
    with cli.client() as client:
        data = client.delete_host_whitelist(entry_id)
    _render.show(cli.out, json_out, data, f"deleted whitelist entry {entry_id}")
