"""Job templates as YAML documents: what ``jobfleet template export`` writes and
``jobfleet template import`` reads.

    kind: jobfleet/template
    version: 1
    template:
      name: deploy web
      description: roll out a build
      variables:
      - {name: hosts, type: host_list, required: true, server: {host_id_list: [3, 4]}}
      - {name: db_password, type: password, value: ''}
      steps:
      - name: check disk
        type: script
        script_info:
          script_type: 1
          script_language: shell
          script_content: |
            df -h /opt
          account: root
          server: {variable: hosts}
    plans:
    - name: production
      enabled_steps: [check disk]
      variables:
      - {name: hosts, server: {host_id_list: [3, 4, 5]}}

Steps and variables have the shapes of ``domain/plans.py`` and ``domain/variables.py``
without ids: names identify steps and variables in a file. Step types, variable
types and script languages may be written as names or as bk-job's numbers; an
account is its alias. Script references keep ``script_id`` and
``script_version_id``. Secrets never go into a file: password values and sensitive
script parameters are written empty, and an empty one read back means "keep the
stored value" when a template is updated from a file (nothing to keep otherwise).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.plans import parse_steps
from jobfleet.domain.status import ScriptType, StepType, VariableType
from jobfleet.domain.variables import MASK, Variable, apply_overrides, parse_definitions

if TYPE_CHECKING:
    import yaml

KIND = "jobfleet/template"
FORMAT_VERSION = 1

STEP_TYPES = {"script": StepType.SCRIPT, "file": StepType.FILE, "confirm": StepType.MANUAL_CONFIRM}
VARIABLE_TYPES = {
    "string": VariableType.STRING,
    "namespace": VariableType.NAMESPACE,
    "host_list": VariableType.HOST_LIST,
    "password": VariableType.PASSWORD,
    "assoc_array": VariableType.ASSOC_ARRAY,
    "index_array": VariableType.INDEX_ARRAY,
}
# values in a document, counted as read (as many as a request's JSON may hold)
MAX_VALUES = 1_000_000
LANGUAGES = {"shell": 1, "bat": 2, "perl": 3, "python": 4, "powershell": 5}

_TOP_KEYS = {"kind", "version", "template", "plans"}
_TEMPLATE_KEYS = {"name", "description", "variables", "steps"}
_PLAN_KEYS = {"name", "description", "enabled_steps", "variables"}


@dataclass
class PlanDocument:
    name: str
    description: str = ""
    # names of the steps the plan runs; None: all of them
    enabled_steps: list[str] | None = None
    # values by variable name: {name, value} or, for host lists, {name, server}
    variables: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TemplateDocument:
    """A template and its plans; steps and variables in the store's request shape."""

    name: str
    description: str
    steps: list[dict[str, Any]]
    variables: list[dict[str, Any]]
    plans: list[PlanDocument] = field(default_factory=list)


# --- writing ---------------------------------------------------------------------


def _names(table: Mapping[str, int]) -> dict[int, str]:
    return {int(number): name for name, number in table.items()}


def _compact(raw: dict[str, Any]) -> dict[str, Any]:
    """Without unset values and 0 flags: what a reader does not need to see."""
    return {
        k: v
        for k, v in raw.items()
        if v is not None and not (k.startswith("is_") and not v) and v != {}
    }


def _alias(account: Any) -> Any:
    if isinstance(account, dict) and account.get("alias"):
        return str(account["alias"])
    return account


def _file_step(info: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(info)
    out["file_source_list"] = [
        _compact({**src, "account": _alias(src.get("account"))})
        for src in out.get("file_source_list") or []
    ]
    dest = out.get("file_destination") or {}
    out["file_destination"] = _compact({**dest, "account": _alias(dest.get("account"))})
    return _compact(out)


def _script_step(info: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(info)
    out["account"] = _alias(out.get("account"))
    if out.get("is_param_sensitive"):
        out["script_param"] = ""
    if out.get("script_type", ScriptType.LOCAL) == ScriptType.LOCAL:
        out["script_language"] = _names(LANGUAGES).get(
            int(out.get("script_language") or 0), out.get("script_language")
        )
    else:
        # the referenced version decides the language and the text
        out.pop("script_language", None)
        out.pop("script_content", None)
    if not out.get("script_param") and not out.get("is_param_sensitive"):
        out.pop("script_param", None)
    # the script last: the settings stay together above a long literal block
    if "script_content" in out:
        out["script_content"] = out.pop("script_content")
    return _compact(out)


def document_step(step: Mapping[str, Any]) -> dict[str, Any]:
    """A stored step as a file shows it."""
    step_type = int(step["type"])
    out: dict[str, Any] = {
        "name": step["name"],
        "type": _names(STEP_TYPES).get(step_type, step_type),
    }
    if step_type == StepType.SCRIPT:
        out["script_info"] = _script_step(step["script_info"])
    elif step_type == StepType.FILE:
        out["file_info"] = _file_step(step["file_info"])
    else:
        out["approval_info"] = copy.deepcopy(step.get("approval_info") or {})
    return out


def document_variable(var: Variable) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": var.name,
        "type": _names(VARIABLE_TYPES)[int(var.type)],
    }
    if var.description:
        out["description"] = var.description
    if var.required:
        out["required"] = True
    if var.changeable:
        out["changeable"] = True
    out.update(_value(var))
    return out


def _value(var: Variable) -> dict[str, Any]:
    if var.type == VariableType.HOST_LIST:
        return {"server": copy.deepcopy(var.server or {})}
    return {"value": "" if var.type == VariableType.PASSWORD else var.value}


def build(
    name: str,
    description: str,
    steps: Iterable[Mapping[str, Any]],
    variables: Iterable[Variable],
    plans: Iterable[tuple[str, str, Iterable[Mapping[str, Any]], Iterable[Variable]]] = (),
) -> dict[str, Any]:
    """The document of a template and its plans (each as name, description, steps with
    ``enabled``, variables with the plan's values), ready for ``dump``."""
    doc_plans = []
    for plan_name, plan_description, plan_steps, plan_vars in plans:
        entry: dict[str, Any] = {"name": plan_name}
        if plan_description:
            entry["description"] = plan_description
        entry["enabled_steps"] = [s["name"] for s in plan_steps if s.get("enabled", True)]
        entry["variables"] = [{"name": v.name, **_value(v)} for v in plan_vars]
        doc_plans.append(entry)
    template: dict[str, Any] = {"name": name}
    if description:
        template["description"] = description
    template["variables"] = [document_variable(v) for v in variables]
    template["steps"] = [document_step(s) for s in steps]
    return {"kind": KIND, "version": FORMAT_VERSION, "template": template, "plans": doc_plans}


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


@functools.cache
def _dumper() -> type[yaml.SafeDumper]:
    """The safe dumper, writing multi-line text (scripts) as literal blocks. Made on the
    first export: PyYAML stays in memory for the process's life (~1 MiB), and only an
    export or an import of a template needs it."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, _represent_str)
    return Dumper


def dump(document: Mapping[str, Any]) -> str:
    import yaml

    return yaml.dump(
        dict(document),
        Dumper=_dumper(),
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


# --- reading ---------------------------------------------------------------------


def _check_size(raw: Any) -> None:
    """At most ``MAX_VALUES`` values once aliases are expanded, and no NUL in any text.

    YAML reads an alias as the anchored object itself, so a few hundred bytes of nested
    aliases (or an alias to its own anchor) are a document that anything walking,
    printing or storing it never ends."""
    stack = [raw]
    count = 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise _bad("the document", f"more than {MAX_VALUES} values once its aliases are read")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and "\x00" in item:
            # YAML spells one "\0"; PostgreSQL's text and JSON hold none
            raise _bad("the document", "a text holds a NUL character")


def _bad(where: str, reason: str) -> JobError:
    return JobError(ErrorCode.BAD_REQUEST, f"Invalid template document: {where}: {reason}")


def _mapping(raw: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _bad(where, "must be a mapping")
    unknown = sorted(str(k) for k in raw if k not in keys)
    if unknown:
        raise _bad(where, f"unknown key {unknown[0]!r} (expected {', '.join(sorted(keys))})")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _bad(where, "must be a list")
    return raw


def _number(raw: Any, table: Mapping[str, int], where: str) -> Any:
    """A name from ``table`` as its number; anything else is left to the domain checks."""
    if isinstance(raw, str) and not raw.strip().isdecimal():
        number = table.get(raw.strip().lower())
        if number is None:
            raise _bad(where, f"{raw!r} is not one of {', '.join(table)}")
        return int(number)
    return raw


def _wire_step(raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        return raw
    step = copy.deepcopy(raw)
    step["type"] = _number(step.get("type"), STEP_TYPES, f"{where}.type")
    info = step.get("script_info")
    if isinstance(info, dict):
        info["script_language"] = _number(
            info.get("script_language"), LANGUAGES, f"{where}.script_info.script_language"
        )
        if info.get("is_param_sensitive") and info.get("script_param") in (None, ""):
            info["script_param"] = MASK
    return step


def _wire_variable(raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        return raw
    var = dict(raw)
    var["type"] = _number(var.get("type"), VARIABLE_TYPES, f"{where}.type")
    if str(var["type"]).strip() == str(int(VariableType.PASSWORD)) and not var.get("value"):
        var["value"] = MASK
    return var


def _plan(
    raw: Any, where: str, steps: list[dict[str, Any]], variables: list[Variable]
) -> PlanDocument:
    body = _mapping(raw, where, _PLAN_KEYS)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(where, "a plan needs a name")
    where = f"plan {name!r}"
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise _bad(where, "description must be text")
    enabled = body.get("enabled_steps")
    if enabled is not None:
        step_names = {s["name"] for s in steps}
        enabled = [str(n) for n in _list(enabled, f"{where}.enabled_steps")]
        for step_name in enabled:
            if step_name not in step_names:
                raise _bad(f"{where}.enabled_steps", f"the template has no step {step_name!r}")
        if not enabled:
            raise _bad(f"{where}.enabled_steps", "a plan needs at least one step")
    types = {v.name: v.type for v in variables}
    values = []
    for item in _list(body.get("variables"), f"{where}.variables"):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _bad(f"{where}.variables", "each entry is a mapping with a name")
        if item["name"] not in types:
            raise _bad(f"{where}.variables", f"the template has no variable {item['name']!r}")
        entry = dict(item)
        if types[item["name"]] == VariableType.PASSWORD and entry.get("value") in (None, ""):
            entry["value"] = MASK
        values.append(entry)
    # the same checks a plan's values get when it is saved
    apply_overrides(variables, [v for v in values if v.get("value") != MASK])
    return PlanDocument(name.strip(), description, enabled, values)


def load(text: str) -> TemplateDocument:
    """Read and fully check a document; raises ``JobError`` naming what is wrong."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise JobError(ErrorCode.BAD_REQUEST, f"Invalid template document: {exc}") from None
    except RecursionError:
        # PyYAML composes nested nodes recursively: a deep enough document exhausts the stack
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            "Invalid parameter [template document]: nested too deeply",
        ) from None
    _check_size(raw)
    top = _mapping(raw, "the document", _TOP_KEYS)
    if top.get("kind") != KIND:
        raise _bad("kind", f"expected {KIND!r}, got {top.get('kind')!r}")
    if top.get("version") != FORMAT_VERSION:
        raise _bad(
            "version", f"this server reads version {FORMAT_VERSION}, got {top.get('version')!r}"
        )
    body = _mapping(top.get("template"), "template", _TEMPLATE_KEYS)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad("template.name", "a template needs a name")
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise _bad("template.description", "must be text")
    var_raw = [
        _wire_variable(v, f"template.variables[{i}]")
        for i, v in enumerate(_list(body.get("variables"), "template.variables"))
    ]
    step_raw = [
        _wire_step(s, f"template.steps[{i}]")
        for i, s in enumerate(_list(body.get("steps"), "template.steps"))
    ]
    variables = parse_definitions(var_raw, "template.variables")
    for i, var in enumerate(variables, start=1):
        var.id = i
    steps = parse_steps(step_raw, variables, "template.steps")
    plans: list[PlanDocument] = []
    for i, item in enumerate(_list(top.get("plans"), "plans")):
        plan = _plan(item, f"plans[{i}]", steps, variables)
        if any(p.name == plan.name for p in plans):
            raise _bad("plans", f"two plans are named {plan.name!r}")
        plans.append(plan)
    return TemplateDocument(name.strip(), description, step_raw, var_raw, plans)
