"""Steps of job templates and plans, in the shape bk-job's ``get_job_plan_detail`` shows.

A step is kept as a plain dict (what the store holds, what YAML files hold):

    {"id": 3, "name": "...", "type": 1,
     "script_info": {"script_type": 1 | 2 | 3, "script_id": str?, "script_version_id": int?,
                     "script_content": str (plain text, type 1 only), "script_language": int,
                     "script_param": str, "script_timeout": int,
                     "account": {"id"?: int, "alias"?: str}, "server": server?,
                     "is_param_sensitive": 0 | 1, "is_ignore_error": 0 | 1}}
    {..., "type": 2,
     "file_info": {"file_source_list": [{"file_list": [str], "file_type": 1 | 2,
                                         "account": {...}?, "server": server?}],
                   "file_destination": {"path": str, "account": {...}, "server": server?},
                   "timeout": int, "source_speed_limit": int?, "destination_speed_limit": int?,
                   "transfer_mode": 1 | 2, "is_ignore_error": 0 | 1}}
    {..., "type": 3,
     "approval_info": {"approval_type": 1 | 2, "approval_user": {"user_list": [str],
                       "role_list": [str]}, "approval_message": str, "notify_channel": [str]}}

A ``server`` may name a host variable instead of hosts: ``{"variable": "name"}``.
Plans add ``"enabled": bool`` to each step. bk-job's wire form base64-encodes
``script_content`` and ``script_param``; the store and YAML keep plain text.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.paths import MAX_PATH
from jobfleet.domain.scripts import MAX_PARAM_BYTES, MAX_SCRIPT_BYTES, MAX_SENSITIVE_PARAM_BYTES
from jobfleet.domain.status import ScriptLanguage, ScriptType, StepType, VariableType
from jobfleet.domain.variables import MASK, REFERENCE_RE, Variable, apply_overrides

MAX_STEPS = 100
DEFAULT_TIMEOUT = 7200
# a file step's speed limits, in MB/s: in bytes a second the largest still fits 64 bits
# (and every message to an agent must)
MAX_SPEED_LIMIT = 2**31 - 1
# approval_type: 1 any one approver confirms, 2 all of them must
APPROVE_ANY = 1
APPROVE_ALL = 2
# the role bk-job uses for "whoever launched the job"
ROLE_LAUNCHER = "JOB_RESOURCE_TRIGGER_USER"


def _bad(field: str, reason: str) -> JobError:
    return JobError(ErrorCode.INVALID_PARAM_WITH_REASON, f"Invalid parameter [{field}]: {reason}")


def _int(raw: Any, field: str, default: int | None = None) -> int | None:
    if raw in (None, ""):
        return default
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise _bad(field, "must be an integer")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _bad(field, f"{raw!r} is not an integer") from None


def _flag(raw: Any) -> int:
    return 1 if raw in (1, True, "1", "true", "True") else 0


def _str_list(raw: Any) -> list[str]:
    # a lone string is one item, not a sequence of characters
    if isinstance(raw, str):
        return [raw] if raw else []
    if not isinstance(raw, list | tuple):
        return []
    return [str(x) for x in raw if x not in (None, "")]


def _account(raw: Any, field: str) -> dict[str, Any]:
    if isinstance(raw, str) and raw:
        return {"alias": raw}
    if isinstance(raw, dict):
        out: dict[str, Any] = {}
        if raw.get("id") not in (None, ""):
            out["id"] = _int(raw.get("id"), f"{field}.id")
        if raw.get("alias"):
            out["alias"] = str(raw["alias"])
        elif raw.get("name") and "id" not in out:
            out["alias"] = str(raw["name"])
        if out:
            return out
    raise JobError.missing(f"{field}")


def _server(raw: Any, field: str, host_vars: set[str], required: bool) -> dict[str, Any] | None:
    if raw in (None, {}):
        if required:
            raise JobError(ErrorCode.STEP_TARGET_EMPTY, f"Step target is empty [{field}]")
        return None
    if not isinstance(raw, dict):
        raise _bad(field, "must be a server object")
    variable = raw.get("variable")
    if variable:
        if not isinstance(variable, str) or variable not in host_vars:
            raise JobError(
                ErrorCode.HOST_VARIABLE_MISSING,
                f"Host variable {variable!r} named in [{field}] is not a host variable "
                "of the template",
            )
        return {"variable": str(variable)}
    out: dict[str, Any] = {}
    for key in ("host_id_list", "ip_list", "dynamic_group_list", "topo_node_list"):
        value = raw.get(key)
        if value in (None, []):
            continue
        if not isinstance(value, list):
            raise _bad(f"{field}.{key}", "must be a list")
        out[key] = value
    if not out:
        if required:
            raise JobError(ErrorCode.STEP_TARGET_EMPTY, f"Step target is empty [{field}]")
        return None
    return out


def _file_source(raw: dict[str, Any], field: str) -> dict[str, Any]:
    """The third-party source of a ``file_type`` 3 entry: ``file_source_id`` (wins) or
    ``file_source_code``; checked against the business when the plan runs."""
    source_id = _int(raw.get("file_source_id"), f"{field}.file_source_id")
    if source_id is not None:
        return {"file_source_id": source_id}
    code = raw.get("file_source_code")
    if not isinstance(code, str) or not code:
        raise JobError.missing(f"{field}.file_source_id|{field}.file_source_code")
    return {"file_source_code": code}


def _script_info(raw: Any, field: str, host_vars: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise JobError.missing(field)
    script_type = _int(raw.get("script_type"), f"{field}.script_type", int(ScriptType.LOCAL))
    if script_type not in (1, 2, 3):
        raise _bad(f"{field}.script_type", "1 (inline), 2 (business script) or 3 (public script)")
    out: dict[str, Any] = {"script_type": script_type}
    if script_type == ScriptType.LOCAL:
        content = raw.get("script_content")
        if not isinstance(content, str) or not content.strip():
            raise JobError.missing(f"{field}.script_content")
        if len(content.encode()) > MAX_SCRIPT_BYTES:
            raise _bad(f"{field}.script_content", f"longer than {MAX_SCRIPT_BYTES} bytes")
        language = _int(raw.get("script_language"), f"{field}.script_language")
        if language is None:
            raise JobError.missing(f"{field}.script_language")
        if language not in {int(x) for x in ScriptLanguage}:
            raise JobError(
                ErrorCode.INVALID_PARAM_WITH_NAME, f"Invalid parameter [{field}.script_language]"
            )
        out["script_content"] = content
        out["script_language"] = language
    else:
        script_id = raw.get("script_id")
        version_id = _int(raw.get("script_version_id"), f"{field}.script_version_id")
        if not script_id and version_id is None:
            raise JobError.missing(f"{field}.script_id|{field}.script_version_id")
        if script_id:
            out["script_id"] = str(script_id)
        if version_id is not None:
            out["script_version_id"] = version_id
    param = raw.get("script_param")
    out["script_param"] = "" if param is None else str(param)
    sensitive = _flag(raw.get("is_param_sensitive"))
    limit = MAX_SENSITIVE_PARAM_BYTES if sensitive else MAX_PARAM_BYTES
    if len(out["script_param"].encode()) > limit:
        raise _bad(f"{field}.script_param", f"longer than {limit} bytes")
    out["script_timeout"] = _timeout(raw.get("script_timeout", raw.get("timeout")), field)
    out["account"] = _account(raw.get("account"), f"{field}.account")
    out["server"] = _server(raw.get("server"), f"{field}.server", host_vars, required=True)
    out["is_param_sensitive"] = sensitive
    out["is_ignore_error"] = _flag(raw.get("is_ignore_error"))
    return out


def _timeout(raw: Any, field: str) -> int:
    value = _int(raw, f"{field}.timeout", DEFAULT_TIMEOUT)
    assert value is not None
    if value < 1 or value > 259200:
        raise _bad(f"{field}.timeout", "must be between 1 and 259200 seconds")
    return value


def _speed(raw: Any, field: str) -> int | None:
    value = _int(raw, field)
    if value is not None and value > MAX_SPEED_LIMIT:
        raise _bad(field, f"at most {MAX_SPEED_LIMIT} MB/s")
    return value


def _file_info(raw: Any, field: str, host_vars: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise JobError.missing(field)
    sources_raw = raw.get("file_source_list")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise JobError(
            ErrorCode.MISSING_PARAM_WITH_NAME, f"Missing parameter [{field}.file_source_list]"
        )
    sources = []
    for i, src in enumerate(sources_raw):
        name = f"{field}.file_source_list[{i}]"
        if not isinstance(src, dict):
            raise _bad(name, "must be an object")
        files = src.get("file_list")
        if (
            not isinstance(files, list)
            or not files
            or not all(isinstance(f, str) and f for f in files)
        ):
            raise JobError.missing(f"{name}.file_list")
        file_type = _int(src.get("file_type"), f"{name}.file_type", 1)
        if file_type == 1:
            for f in files:
                if not f.startswith("/") and not f.startswith("${"):
                    raise _bad(f"{name}.file_list", f"{f!r} is not an absolute path")
            sources.append(
                {
                    "file_list": list(files),
                    "file_type": 1,
                    "account": _account(src.get("account"), f"{name}.account"),
                    "server": _server(src.get("server"), f"{name}.server", host_vars, True),
                }
            )
        elif file_type == 2:
            sources.append({"file_list": list(files), "file_type": 2})
        elif file_type == 3:
            sources.append({"file_list": list(files), "file_type": 3, **_file_source(src, name)})
        else:
            raise _bad(f"{name}.file_type", "1 (server), 2 (upload) or 3 (third-party source)")
    dest = raw.get("file_destination")
    if not isinstance(dest, dict):
        raise JobError.missing(f"{field}.file_destination")
    path = dest.get("path")
    if not isinstance(path, str) or not path.strip():
        raise JobError.missing(f"{field}.file_destination.path")
    path = path.strip()
    if not path.startswith("/") and not path.startswith("${"):
        raise _bad(f"{field}.file_destination.path", f"{path!r} is not an absolute path")
    if len(path) > MAX_PATH:
        raise _bad(f"{field}.file_destination.path", f"longer than {MAX_PATH} characters")
    mode = _int(raw.get("transfer_mode"), f"{field}.transfer_mode", 2)
    if mode not in (1, 2):
        raise JobError(ErrorCode.NOT_SUPPORTED, f"transfer_mode {mode} is not supported")
    return {
        "file_source_list": sources,
        "file_destination": {
            "path": path,
            "account": _account(dest.get("account"), f"{field}.file_destination.account"),
            "server": _server(
                dest.get("server"), f"{field}.file_destination.server", host_vars, True
            ),
        },
        "timeout": _timeout(raw.get("timeout"), field),
        "source_speed_limit": _speed(
            raw.get("source_speed_limit", raw.get("upload_speed_limit")),
            f"{field}.source_speed_limit",
        ),
        "destination_speed_limit": _speed(
            raw.get("destination_speed_limit", raw.get("download_speed_limit")),
            f"{field}.destination_speed_limit",
        ),
        "transfer_mode": mode,
        "is_ignore_error": _flag(raw.get("is_ignore_error")),
    }


def _no_password_in_paths(info: dict[str, Any], field: str, secrets: set[str]) -> None:
    """A file step's paths are shown as they ran (step details, file logs): a password
    variable in one would be shown in clear."""
    paths = [
        (f"{field}.file_source_list[{i}].file_list", path)
        for i, source in enumerate(info["file_source_list"])
        if source["file_type"] == 1
        for path in source["file_list"]
    ]
    paths.append((f"{field}.file_destination.path", info["file_destination"]["path"]))
    for where, path in paths:
        for match in REFERENCE_RE.finditer(path):
            if match.group(1) in secrets:
                raise _bad(
                    where,
                    f"password variable {match.group(1)!r} cannot be part of a file path: "
                    "paths are shown in the job's details and file logs",
                )


def _approval_info(raw: Any, field: str) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    approval_type = _int(raw.get("approval_type"), f"{field}.approval_type", APPROVE_ANY)
    if approval_type not in (APPROVE_ANY, APPROVE_ALL):
        raise _bad(f"{field}.approval_type", "1 (any approver) or 2 (every approver)")
    users = raw.get("approval_user") if isinstance(raw.get("approval_user"), dict) else {}
    user_list = _str_list(users.get("user_list"))
    role_list = _str_list(users.get("role_list"))
    if not user_list and not role_list:
        role_list = [ROLE_LAUNCHER]
    return {
        "approval_type": approval_type,
        "approval_user": {"user_list": user_list, "role_list": role_list},
        "approval_message": str(raw.get("approval_message") or ""),
        "notify_channel": _str_list(raw.get("notify_channel")),
    }


def parse_steps(
    raw: Any, variables: Iterable[Variable], field: str = "step_list"
) -> list[dict[str, Any]]:
    """Validated, normalized steps; ``id`` is kept when given (the store assigns the rest)."""
    if not isinstance(raw, list) or not raw:
        raise JobError.missing(field)
    if len(raw) > MAX_STEPS:
        raise _bad(field, f"at most {MAX_STEPS} steps")
    host_vars = {v.name for v in variables if v.type == VariableType.HOST_LIST}
    secrets = {v.name for v in variables if v.type == VariableType.PASSWORD}
    steps = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        name_field = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise _bad(name_field, "must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise JobError.missing(f"{name_field}.name")
        name = name.strip()[:512]
        if name in names:
            raise _bad(name_field, f"two steps are named {name!r}")
        names.add(name)
        step_type = _int(item.get("type"), f"{name_field}.type")
        step: dict[str, Any] = {"id": _int(item.get("id"), f"{name_field}.id", 0), "name": name}
        if step_type == StepType.SCRIPT:
            step["type"] = 1
            step["script_info"] = _script_info(
                item.get("script_info"), f"{name_field}.script_info", host_vars
            )
        elif step_type == StepType.FILE:
            step["type"] = 2
            step["file_info"] = _file_info(
                item.get("file_info"), f"{name_field}.file_info", host_vars
            )
            _no_password_in_paths(step["file_info"], f"{name_field}.file_info", secrets)
        elif step_type == StepType.MANUAL_CONFIRM:
            step["type"] = 3
            step["approval_info"] = _approval_info(
                item.get("approval_info"), f"{name_field}.approval_info"
            )
        else:
            raise _bad(f"{name_field}.type", "1 (script), 2 (file) or 3 (manual confirmation)")
        if "enabled" in item:
            step["enabled"] = bool(item["enabled"])
        steps.append(step)
    return steps


# a plan's choices: enabled steps and its own variable values -----------------------


def _named(entry: dict[str, Any], current: Sequence[Variable]) -> Variable | None:
    """The variable an override entry names, by id or (without one) by name."""
    raw_id = entry.get("id")
    if raw_id in (None, ""):
        name = entry.get("name")
        return next((v for v in current if v.name == name), None)
    try:
        ident = int(raw_id)
    except (TypeError, ValueError):
        return None
    return next((v for v in current if v.id == ident), None)


def with_values(current: list[Variable], values: Any, *, lenient: bool = False) -> list[Variable]:
    """``current`` overridden by ``values``; a password sent as MASK keeps its value.
    ``lenient`` as in ``apply_overrides``."""
    if not isinstance(values, list):
        return apply_overrides(current, values, lenient=lenient)
    kept = []
    for entry in values:
        if isinstance(entry, dict) and entry.get("value") == MASK:
            target = _named(entry, current)
            if target is not None and target.type == VariableType.PASSWORD:
                continue
        kept.append(entry)
    return apply_overrides(current, kept, lenient=lenient)


def synced(
    plan_steps: Iterable[dict[str, Any]],
    plan_variables: Iterable[Variable],
    template_steps: Iterable[dict[str, Any]],
    template_variables: Iterable[Variable],
) -> tuple[list[dict[str, Any]], list[Variable]]:
    """A plan re-copied from its template.

    Steps keep their enabled flag when their id still exists (new steps are
    enabled); variables keep the plan's value when their id and type still match.
    """
    enabled = {s["id"]: bool(s.get("enabled", True)) for s in plan_steps}
    steps = [{**copy.deepcopy(s), "enabled": enabled.get(s["id"], True)} for s in template_steps]
    own = {v.id: v for v in plan_variables}
    variables = []
    for var in template_variables:
        mine = own.get(var.id)
        if mine is not None and mine.type == var.type:
            var = replace(var, value=mine.value, server=copy.deepcopy(mine.server))
        else:
            var = replace(var, server=copy.deepcopy(var.server))
        variables.append(var)
    return steps, variables


def enable(steps: list[dict[str, Any]], enabled_ids: Collection[int] | None) -> None:
    """Set each step's ``enabled`` flag (in place); None enables all of them."""
    if enabled_ids is not None:
        known = {s["id"] for s in steps}
        unknown = sorted(set(enabled_ids) - known)
        if unknown:
            raise JobError.invalid(
                "enabled_step_ids", f"no step with id {', '.join(map(str, unknown))}"
            )
        if not enabled_ids:
            raise JobError.invalid("enabled_step_ids", "a plan needs at least one enabled step")
    for step in steps:
        step["enabled"] = enabled_ids is None or step["id"] in enabled_ids
