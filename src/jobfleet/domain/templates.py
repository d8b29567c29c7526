"""Pure rules of job templates: names, stable step and variable ids, masked secrets.

Steps and variables have integer ids that are stable within their template: an
update keeps the id of an entry whose id (or, without an id, whose name) matches
an existing one, and gives new entries fresh ids that are never reused.

On writes, a password value (or the parameter of a step marked
``is_param_sensitive``) equal to ``MASK`` means "keep the stored value": it is
what readers were shown, so sending a read object back unchanged changes nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from jobfleet.domain.errors import JobError
from jobfleet.domain.status import StepType, VariableType
from jobfleet.domain.variables import MASK, Variable

MAX_NAME = 512
MAX_DESCRIPTION = 4096


def assign_ids(
    items: Sequence[tuple[int, str]], existing: dict[int, str], next_id: int
) -> tuple[list[int], int]:
    """Ids for ``(given id, name)`` items against ``existing`` ``{id: name}``.

    A given id that exists keeps its identity (the first item claiming it does);
    an item without an id takes over the existing entry of the same name when no
    other item claimed it; everything else gets a fresh id from ``next_id``.
    Returns the ids and the next free id.
    """
    ids: list[int | None] = [None] * len(items)
    claimed: set[int] = set()
    for i, (given, _name) in enumerate(items):
        if given and given in existing and given not in claimed:
            ids[i] = given
            claimed.add(given)
    by_name = {name: ident for ident, name in existing.items()}
    for i, (given, name) in enumerate(items):
        if ids[i] is None and not given:
            ident = by_name.get(name)
            if ident is not None and ident not in claimed:
                ids[i] = ident
                claimed.add(ident)
    out: list[int] = []
    for ident in ids:
        if ident is None:
            ident = next_id
            next_id += 1
        out.append(ident)
    return out, next_id


def number(
    steps: list[dict[str, Any]],
    variables: list[Variable],
    old_steps: Sequence[dict[str, Any]],
    old_vars: Sequence[Variable],
    next_step: int,
    next_var: int,
) -> tuple[int, int]:
    """Give steps and variables their ids (in place; a template's steps carry no
    ``enabled`` flag); returns the next free step and variable ids."""
    step_ids, next_step = assign_ids(
        [(int(s.get("id") or 0), s["name"]) for s in steps],
        {s["id"]: s["name"] for s in old_steps},
        next_step,
    )
    for step, ident in zip(steps, step_ids, strict=True):
        step["id"] = ident
        step.pop("enabled", None)
    var_ids, next_var = assign_ids(
        [(v.id, v.name) for v in variables], {v.id: v.name for v in old_vars}, next_var
    )
    for var, ident in zip(variables, var_ids, strict=True):
        var.id = ident
    return next_step, next_var


def keep_masked(
    steps: list[dict[str, Any]],
    variables: list[Variable],
    old_steps: Iterable[dict[str, Any]],
    old_variables: Iterable[Variable],
) -> None:
    """Replace MASK by the stored secret of the same id (in place); "" when there is none."""
    old_vars = {v.id: v for v in old_variables}
    for var in variables:
        if var.type == VariableType.PASSWORD and var.value == MASK:
            old = old_vars.get(var.id)
            var.value = old.value if old is not None and old.type == var.type else ""
    old_params = {
        s["id"]: s["script_info"].get("script_param", "")
        for s in old_steps
        if s.get("type") == StepType.SCRIPT and s["script_info"].get("is_param_sensitive")
    }
    for step in steps:
        info = step.get("script_info")
        if info and info.get("is_param_sensitive") and info.get("script_param") == MASK:
            info["script_param"] = old_params.get(step["id"], "")


def public_steps(steps: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps as shown to anyone: a sensitive script parameter masked."""
    out = []
    for step in steps:
        step = copy.deepcopy(step)
        info = step.get("script_info")
        if info and info.get("is_param_sensitive") and info.get("script_param"):
            info["script_param"] = MASK
        out.append(step)
    return out


def check_name(raw: Any, field_name: str = "name") -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise JobError.missing(field_name)
    name = raw.strip()
    if len(name) > MAX_NAME:
        raise JobError.invalid(field_name, f"longer than {MAX_NAME} characters")
    return name


def check_description(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise JobError.invalid("description", "must be a string")
    if len(raw) > MAX_DESCRIPTION:
        raise JobError.invalid("description", f"longer than {MAX_DESCRIPTION} characters")
    return raw
