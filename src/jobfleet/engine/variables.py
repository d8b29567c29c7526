"""A plan job's global variables while it runs: what each step sees and what it sets.

The job row keeps the values it started with; each step row keeps the values as
that step left them (a "snapshot"), so a step reads the latest snapshot before
it and ``get_job_instance_global_var_value`` can show the values per step. Both
are stored sealed: password values encrypted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.status import ScriptLanguage, VariableType
from jobfleet.domain.variables import (
    MASK,
    REFERENCE_RE,
    HostValueRefused,
    Variable,
    host_value_refused,
    is_read_by_programs,
    parse_reported,
    references,
    render,
    render_path,
    shell_prelude,
    unquote_array,
)
from jobfleet.engine.tracking import REFUSED
from jobfleet.store.secrets import Cipher

ARRAYS = (VariableType.ASSOC_ARRAY, VariableType.INDEX_ARRAY)
# the key of a sealed variable whose shared value a host set
SET_BY_HOST = "set_by_host"


@dataclass
class VariableState:
    variables: list[Variable]
    # namespace variables set per host by a step: {name: {host_id: value}}
    per_host: dict[str, dict[int, str]] = field(default_factory=dict)
    # the variables whose shared value a host set in an earlier step: any host may
    # report anything, so such a value is data for the hosts after, never text that
    # becomes their code
    from_host: set[str] = field(default_factory=set)

    def values(self, host: int | None = None) -> dict[str, str]:
        out = {v.name: v.value for v in self.variables}
        if host is not None:
            for name, hosts in self.per_host.items():
                if host in hosts:
                    out[name] = hosts[host]
        return out

    def host_set(self, host: int | None = None) -> set[str]:
        """The variables whose value (``host``'s own, for a namespace) a host set."""
        out = set(self.from_host)
        if host is not None:
            shared = {v.name: v.value for v in self.variables if v.name in self.per_host}
            for name, hosts in self.per_host.items():
                if host in hosts and hosts[host] != shared.get(name):
                    out.add(name)
        return out

    @property
    def changeable(self) -> bool:
        return any(v.changeable for v in self.variables)


def seal(state: VariableState, cipher: Cipher) -> list[dict[str, Any]]:
    out = []
    for var in state.variables:
        raw = var.to_dict()
        raw["value"] = var.value
        if var.type == VariableType.PASSWORD and var.value:
            raw["value"] = cipher.encrypt(var.value)
        hosts = state.per_host.get(var.name)
        if hosts:
            raw["hosts"] = {str(h): v for h, v in hosts.items()}
        if var.name in state.from_host:
            raw[SET_BY_HOST] = 1
        out.append(raw)
    return out


def unseal(raw: Sequence[dict[str, Any]], cipher: Cipher) -> VariableState:
    variables = []
    per_host: dict[str, dict[int, str]] = {}
    from_host: set[str] = set()
    for item in raw:
        var = Variable.from_dict(item)
        if item.get(SET_BY_HOST):
            from_host.add(var.name)
        if var.type == VariableType.PASSWORD and var.value:
            var.value = cipher.decrypt(var.value)
        variables.append(var)
        hosts = item.get("hosts")
        if isinstance(hosts, dict):
            per_host[var.name] = {int(h): str(v) for h, v in hosts.items()}
    return VariableState(variables, per_host, from_host)


def state_before(
    job: Row[Any], steps: Iterable[Row[Any]], order: int, cipher: Cipher
) -> VariableState | None:
    """The values a step at ``order`` starts with: the latest earlier snapshot, or the job's."""
    if job.variables is None:
        return None
    latest = None
    for step in steps:
        if step.step_order < order and step.variables is not None:
            latest = step.variables
    return unseal(latest if latest is not None else job.variables, cipher)


def public_values(raw: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sealed values as the API shows them: passwords masked."""
    out = []
    for item in raw:
        shown: dict[str, Any] = {
            "id": item.get("id"),
            "name": item.get("name"),
            "type": item.get("type"),
            "value": item.get("value") or "",
        }
        if item.get("type") == VariableType.PASSWORD and shown["value"]:
            shown["value"] = MASK
        if item.get("type") == VariableType.HOST_LIST:
            shown["server"] = item.get("server") or {}
        out.append(shown)
    return out


def script_message(
    template: dict[str, Any], state: VariableState, hosts: Iterable[int]
) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """The run message of a script step with variables in it, and per-host differences."""

    # a name reserved since it was stored stays out of where it would act on the
    # programs the script runs; ``${name}`` in the text still reads its value
    exported = [v for v in state.variables if not is_read_by_programs(v.name)]

    shell = template["lang"] == ScriptLanguage.SHELL
    # the text is the same for every host: what it names is read once
    mentioned = [] if shell else references(template["script"], (v.name for v in state.variables))

    def build(values: dict[str, str], host_set: set[str]) -> dict[str, Any]:
        script = template["script"]
        refused = ""
        if shell:
            script = shell_prelude(exported, values) + script
        else:
            refused = host_value_refused(mentioned, host_set, int(template["lang"]))
            script = render(script, values)
        # each parameter is split into words before the values go in: a value is part
        # of one word, whatever it holds
        args = [render(a, values) for a in template["args"]]
        env = {**template.get("env", {}), **{v.name: values.get(v.name, "") for v in exported}}
        return {"script": script, "args": args, "env": env, REFUSED: refused}

    shared = {**template, **build(state.values(), state.host_set())}
    shared["collect_vars"] = state.changeable
    if (
        template["lang"] == ScriptLanguage.SHELL
        and not shared.get("sensitive")
        and _holds_password(template["args"], state)
    ):
        # a password in a parameter would be on the script's command line, which every
        # account on the host may read (``ps``); a shell script reads a sensitive
        # parameter as it reads any other ($1), so it is made one (other languages
        # would lose their arguments: their steps mark the parameter sensitive)
        shared["sensitive"] = True
    per_host: dict[int, dict[str, Any]] = {}
    if state.per_host:
        for host in hosts:
            if any(host in values for values in state.per_host.values()):
                per_host[host] = build(state.values(host), state.host_set(host))
    return shared, per_host


def password_names(state: VariableState) -> set[str]:
    """The names of the password variables of ``state``."""
    return {v.name for v in state.variables if v.type == VariableType.PASSWORD}


def _holds_password(texts: Iterable[str], state: VariableState) -> bool:
    secret = password_names(state)
    return any(
        match.group(1) in secret for text in texts for match in REFERENCE_RE.finditer(text)
    )


def collect(
    state: VariableState, rows: Iterable[Row[Any]], cipher: Cipher | None = None
) -> VariableState:
    """The values after a script step: what its hosts reported for changeable variables
    (sealed by ``reported``).

    A namespace variable keeps one value per host; any other variable takes the value
    reported by the first host (in host id order) that set it.
    """
    by_name = {v.name: v for v in state.variables if v.changeable}
    result = VariableState(
        [replace(v) for v in state.variables],
        {k: dict(v) for k, v in state.per_host.items()},
        set(state.from_host),
    )
    updated = {v.name: v for v in result.variables}
    taken: set[str] = set()
    for row in sorted(rows, key=lambda r: r.bk_host_id):
        raw = row.variables
        if not raw:
            continue
        reported = _opened(raw, cipher)
        for name, value in reported.items():
            var = by_name.get(name)
            if var is None:
                continue
            text = unquote_array(str(value)) if var.type in ARRAYS else str(value)
            if var.type == VariableType.NAMESPACE:
                result.per_host.setdefault(name, {})[row.bk_host_id] = text
            elif name not in taken:
                if text != updated[name].value:
                    result.from_host.add(name)
                updated[name].value = text
                taken.add(name)
    return result


# the one key of a host's report kept sealed: no variable can have this name
SEALED_REPORT = "#sealed"


def reported(text: Any, cipher: Cipher | None = None) -> dict[str, str] | None:
    """What a host says a step set, sealed as one value when ``cipher`` is given: the
    host cannot tell a password from any other variable, so none is kept in clear."""
    if not isinstance(text, str) or not text:
        return None
    values = parse_reported(text)
    if not values:
        return None
    if cipher is None:
        return values
    return {SEALED_REPORT: cipher.encrypt(json.dumps(values))}


def _opened(raw: Any, cipher: Cipher | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    sealed = raw.get(SEALED_REPORT)
    if sealed is None or cipher is None:
        # a report kept before reports were sealed
        return raw
    loaded = json.loads(cipher.decrypt(str(sealed)))
    return loaded if isinstance(loaded, dict) else {}


def render_file_config(
    config: dict[str, Any],
    values: dict[str, str],
    secrets: Iterable[str] = (),
    host_set: Iterable[str] = (),
) -> dict[str, Any]:
    """A file step's paths with ``${name}`` replaced, but for the ``secrets`` (password
    variables): the paths are kept and shown as they ran. A plan may not name one in a
    path (``domain.plans``); one saved before that was checked keeps the reference.

    A value a host set (``host_set``) that would lead a path out of its folder leaves
    the paths as written and ``REFUSED`` saying why: the step's hosts fail with it
    (``engine.files``)."""
    hidden = set(secrets)
    values = {k: v for k, v in values.items() if k not in hidden}
    untrusted = set(host_set)
    out = dict(config)
    try:
        out["target_path"] = render_path(str(config.get("target_path") or ""), values, untrusted)
        sources = []
        for source in config.get("sources") or []:
            source = dict(source)
            if isinstance(source.get("files"), list):
                source["files"] = [render_path(str(f), values, untrusted) for f in source["files"]]
            sources.append(source)
    except HostValueRefused as refused:
        out = dict(config)
        out[REFUSED] = f"jobfleet: {refused}; the file step does not run\n"
        return out
    out["sources"] = sources
    return out
