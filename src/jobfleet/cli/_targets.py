"""Which hosts a command targets: ``--host``/``--host-id`` and, by name or id, ``--group``
(dynamic groups), ``--module``/``--set`` (topology nodes) and ``--label key=value``.

Groups and topology nodes go to the server as bk-job's ``dynamic_group_list`` and
``topo_node_list``, so it resolves them to hosts when the job starts. Labels are matched
by the server too (the dynamic-group preview with ``labels.<key> equal <value>``); the
matching hosts go by id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobfleet.cli._context import CliContext

if TYPE_CHECKING:
    from jobfleet.sdk import JobClient, Target

GroupOption = Annotated[
    list[str] | None,
    typer.Option("--group", "-g", help="Dynamic group, by name or id; repeatable."),
]
ModuleOption = Annotated[
    list[str] | None,
    typer.Option("--module", "-m", help="Topology module, by id, name or SET/MODULE; repeatable."),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Topology set, by name or id; repeatable.")
]
LabelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--label",
        help="Hosts whose agent reports this label, KEY=VALUE; several must all hold.",
    ),
]


class TargetError(ValueError):
    """A name that matches nothing, or more than one thing."""


@dataclass
class Selection:
    """What the options named, before it is resolved against a business."""

    groups: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.groups or self.modules or self.sets or self.labels)


def selection(
    group: Sequence[str] | None,
    module: Sequence[str] | None,
    set_: Sequence[str] | None,
    label: Sequence[str] | None,
) -> Selection:
    return Selection(list(group or ()), list(module or ()), list(set_ or ()), list(label or ()))


def require_some(
    host: Sequence[str] | None, host_id: Sequence[int] | None, chosen: Selection
) -> None:
    if not host and not host_id and not chosen:
        raise typer.BadParameter(
            "give at least one --host, --host-id, --group, --module, --set or --label",
            param_hint="--host",
        )


def resolve_or_fail(
    cli: CliContext, client: JobClient, chosen: Selection, biz: int | None
) -> Target | None:
    """``resolve`` in the command's business; a name it cannot place ends the command."""
    try:
        return resolve(client, chosen, biz if biz is not None else cli.settings.biz)
    except TargetError as exc:
        cli.fail(f"error: {exc}")


def resolve(client: JobClient, chosen: Selection, biz: int) -> Target | None:
    """The ``Target`` for what was chosen in business ``biz``; TargetError names what
    cannot be told apart or found."""
    if not chosen:
        return None
    groups: list[str] = []
    nodes: list[tuple[str, int]] = []
    host_ids: list[int] = []
    if chosen.groups:
        known = client.list_dynamic_groups(biz=biz)
        groups = [_pick_group(known, name, biz) for name in chosen.groups]
    if chosen.modules or chosen.sets:
        topology = client.get_topology(biz=biz)
        nodes += [("set", _pick_set(topology, name, biz)) for name in chosen.sets]
        nodes += [("module", _pick_module(topology, name, biz)) for name in chosen.modules]
    if chosen.labels:
        conditions = [label_condition(text) for text in chosen.labels]
        matched = client.preview_dynamic_group(conditions, biz=biz)
        host_ids = [int(h["bk_host_id"]) for h in matched.get("hosts") or []]
        if not host_ids:
            wanted = " and ".join(chosen.labels)
            raise TargetError(f"no host of business {biz} has label {wanted}")
    from jobfleet.sdk import Target

    return Target(dynamic_groups=tuple(groups), topo_nodes=tuple(nodes), host_ids=tuple(host_ids))


def label_condition(text: str) -> dict[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise TargetError(f"--label {text!r}: write it KEY=VALUE")
    return {"field": f"labels.{key.strip()}", "op": "equal", "value": value}


def _one(found: list[Any], what: str, name: str, biz: int, show: Any) -> Any:
    if not found:
        raise TargetError(f"no {what} {name!r} in business {biz}")
    if len(found) > 1:
        choices = ", ".join(show(f) for f in found)
        raise TargetError(f"{what} {name!r} is ambiguous in business {biz}: {choices}")
    return found[0]


def _pick_group(groups: list[dict[str, Any]], name: str, biz: int) -> str:
    by_id = [g for g in groups if str(g.get("id")) == name]
    found = by_id or [g for g in groups if g.get("name") == name]
    group = _one(found, "dynamic group", name, biz, lambda g: f"{g.get('id')} ({g.get('name')})")
    return str(group["id"])


def _pick_set(topology: dict[str, Any], name: str, biz: int) -> int:
    sets = topology.get("sets") or []
    by_id = [s for s in sets if name.isdecimal() and int(s["id"]) == int(name)]
    found = by_id or [s for s in sets if s.get("name") == name]
    return int(_one(found, "set", name, biz, lambda s: f"{s['id']} ({s.get('name')})")["id"])


def _pick_module(topology: dict[str, Any], name: str, biz: int) -> int:
    modules = [(s, m) for s in topology.get("sets") or [] for m in s.get("modules") or []]
    by_id = [(s, m) for s, m in modules if name.isdecimal() and int(m["id"]) == int(name)]
    set_name, slash, module_name = name.rpartition("/")
    if by_id:
        found = by_id
    elif slash:
        pair = (set_name, module_name)
        found = [(s, m) for s, m in modules if (s.get("name"), m.get("name")) == pair]
    else:
        found = [(s, m) for s, m in modules if m.get("name") == name]
    _set, module = _one(
        found,
        "module",
        name,
        biz,
        lambda sm: f"{sm[1]['id']} ({sm[0].get('name')}/{sm[1].get('name')})",
    )
    return int(module["id"])
