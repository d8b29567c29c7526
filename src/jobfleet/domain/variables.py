"""Global variables of templates, plans and jobs: definitions, values and how scripts see them.

How a script sees a variable (documented in docs/variables.md):

- every variable is in the script's environment under its own name (host lists as
  ``cloud:ip,cloud:ip``, arrays in their bk-job text form);
- shell scripts also get each variable declared as a shell variable before their
  first line (arrays as bash arrays), so ``$name`` and ``${name}`` work natively;
- in other languages, and in script parameters and file paths, ``${name}`` is
  replaced by the value before the step runs, but for a value a host set in an
  earlier step: it is never pasted into another language's script text, stays within
  one parameter word and may not lead a file path out of its folder;
- a step changes a changeable variable by assigning it (shell) or by writing
  ``name=value`` lines to the file named by ``$JOBFLEET_VARS_FILE`` (any language).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from jobfleet.domain.errors import ErrorCode, JobError
from jobfleet.domain.status import ScriptLanguage, VariableType
from jobfleet.domain.targets import parse_target

MASK = "******"
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_VALUE = 64 * 1024
MAX_DESCRIPTION = 1024
REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# the environment a script needs for itself; a variable may not shadow these
RESERVED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "IFS",
        "JOBFLEET_VARS_FILE",
        # every variable is in the environment of every process a step starts, and a
        # changeable one's value may come from another host: these names make the
        # dynamic loader, the C library, the shells or the interpreters steps run with
        # load or run what their value names
        "ENV",
        "SHELLOPTS",
        "PS0",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "PROMPT_COMMAND",
        "CDPATH",
        "GLOBIGNORE",
        "ZDOTDIR",
        # less runs the commands they hold on the file it shows (man, git and others
        # start less)
        "LESSOPEN",
        "LESSCLOSE",
        "GCONV_PATH",
        "GETCONF_DIR",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "MALLOC_TRACE",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
    }
)
# the loader (LD_, DYLD_), bash (BASH_ENV, BASHOPTS…), Python and Perl each read a whole
# family of names, some of which load or run code
RESERVED_PREFIXES = ("JOBFLEET_", "BASH", "LD_", "DYLD_", "PYTHON", "PERL")
# names read by programs that also run on Windows, whose environment names are the same
# in any case (``pythonpath`` is PYTHONPATH there): refused in any spelling. The names
# above are refused as written: jobfleet's agent runs on POSIX hosts, where ``path`` or
# ``python_version`` is a name of its own.
RESERVED_ANY_CASE = frozenset(
    {
        # interpreters and runtimes: code to run first, or where modules are loaded from
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "PYTHONINSPECT",
        "PYTHONUSERBASE",
        # a breakpoint() in any module calls the function it names
        "PYTHONBREAKPOINT",
        "PERL5OPT",
        "PERL5LIB",
        "PERLLIB",
        "PERL5DB",
        # the shell Perl's system() and backticks start on Windows
        "PERL5SHELL",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "PHPRC",
        "PHP_INI_SCAN_DIR",
        "LUA_PATH",
        "LUA_CPATH",
        "TCLLIBPATH",
        "R_PROFILE",
        "R_PROFILE_USER",
        "DOTNET_STARTUP_HOOKS",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "OPENSSL_MODULES",
        # programs git, ssh, sudo and others run for a password, a connection, a pager or
        # an editor
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_ASKPASS",
        "GIT_EXEC_PATH",
        "GIT_TEMPLATE_DIR",
        "GIT_PROXY_COMMAND",
        "GIT_EXTERNAL_DIFF",
        "GIT_PAGER",
        "GIT_EDITOR",
        "GIT_SEQUENCE_EDITOR",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "PAGER",
        "MANPAGER",
        "EDITOR",
        "VISUAL",
        "BROWSER",
        # Windows: the command interpreter programs start, which files a bare command
        # name may be, PowerShell's module path and execution policy
        "COMSPEC",
        "PATHEXT",
        "PSMODULEPATH",
        "PSEXECUTIONPOLICYPREFERENCE",
    }
)
# git reads any config setting, and so ``core.sshCommand`` or ``core.fsmonitor``, from
# GIT_CONFIG_COUNT/KEY_n/VALUE_n, GIT_CONFIG_PARAMETERS and a file named by GIT_CONFIG*;
# Lua runs LUA_INIT(_5_n) as code; .NET loads a profiler DLL named by COR(ECLR)_PROFILER*
RESERVED_ANY_CASE_PREFIXES = ("GIT_CONFIG", "LUA_INIT", "COR_PROFILER", "CORECLR_PROFILER")
VALUE_TYPES = (
    VariableType.STRING,
    VariableType.NAMESPACE,
    VariableType.PASSWORD,
    VariableType.ASSOC_ARRAY,
    VariableType.INDEX_ARRAY,
)
ASSOC_ITEM_RE = re.compile(r'\[\s*"?([^\]"]*)"?\s*\]\s*=\s*("(?:[^"\\]|\\.)*"|\S*)')


@dataclass
class Variable:
    """One global variable: its definition and, in a plan or job, its value."""

    id: int
    name: str
    type: VariableType
    value: str = ""
    # host list variables: a bk-job ``server`` object
    server: dict[str, Any] | None = None
    description: str = ""
    required: bool = False
    # whether a step may set a new value for the steps after it
    changeable: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "type": int(self.type),
            "description": self.description,
            "required": int(self.required),
            "changeable": int(self.changeable),
        }
        if self.type == VariableType.HOST_LIST:
            out["server"] = self.server or {}
        else:
            out["value"] = self.value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Variable:
        return cls(
            id=int(raw["id"]),
            name=str(raw["name"]),
            type=VariableType(int(raw["type"])),
            value=str(raw.get("value") or ""),
            server=dict(raw["server"]) if isinstance(raw.get("server"), dict) else None,
            description=str(raw.get("description") or ""),
            required=bool(raw.get("required")),
            changeable=bool(raw.get("changeable")),
        )

    def public(self) -> dict[str, Any]:
        """The wire form: a password's value is masked."""
        out = self.to_dict()
        if self.type == VariableType.PASSWORD and self.value:
            out["value"] = MASK
        return out


def _invalid(field_name: str, reason: str) -> JobError:
    return JobError(
        ErrorCode.INVALID_PARAM_WITH_REASON, f"Invalid parameter [{field_name}]: {reason}"
    )


def check_name(name: Any, field_name: str = "variables.name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _invalid(
            field_name,
            f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)",
        )
    if is_reserved(name):
        raise _invalid(
            field_name,
            f"{name!r} is reserved: the scripts' environment or the programs that run "
            "them read it (see docs/variables.md)",
        )
    return name


def is_reserved(name: str) -> bool:
    """A name no variable may be defined with."""
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        return True
    upper = name.upper()
    return upper in RESERVED_ANY_CASE or upper.startswith(RESERVED_ANY_CASE_PREFIXES)


# how the programs that read them spell the names of RESERVED_ANY_CASE that are not
# upper case
_SPELLED = {
    "PSMODULEPATH": "PSModulePath",
    "PSEXECUTIONPOLICYPREFERENCE": "PSExecutionPolicyPreference",
}


def is_read_by_programs(name: str) -> bool:
    """A reserved name as the programs on the agent's (POSIX) hosts spell it: a variable
    stored with one before it was reserved is kept out of the scripts' environment and
    shell prelude (``engine.variables``). Another spelling of a name refused in any case
    (a stored ``classpath``) acts on nothing there and keeps reaching the script."""
    if name in RESERVED or name.startswith(RESERVED_PREFIXES):
        return True
    upper = name.upper()
    if upper in RESERVED_ANY_CASE:
        return name == _SPELLED.get(upper, upper)
    return name.startswith(RESERVED_ANY_CASE_PREFIXES)


def check_value(var_type: VariableType, value: Any, name: str) -> str:
    """A value of a non-host variable, checked against its type."""
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _invalid(f"global_var_list.{name}", "value must be a string")
    text = str(value)
    if len(text.encode()) > MAX_VALUE:
        raise _invalid(f"global_var_list.{name}", f"value longer than {MAX_VALUE} bytes")
    if text and var_type in (VariableType.ASSOC_ARRAY, VariableType.INDEX_ARRAY):
        stripped = text.strip()
        if not (stripped.startswith("(") and stripped.endswith(")")):
            kind = "an associative" if var_type == VariableType.ASSOC_ARRAY else "an indexed"
            example = '(["k1"]=v1 ["k2"]=v2)' if var_type == VariableType.ASSOC_ARRAY else "(a b c)"
            raise _invalid(
                f"global_var_list.{name}", f"{kind} array is written like {example}, got {text!r}"
            )
        inner = stripped[1:-1].strip()
        if var_type == VariableType.ASSOC_ARRAY and inner and not ASSOC_ITEM_RE.search(inner):
            raise _invalid(
                f"global_var_list.{name}", f'expected items like ["key"]=value, got {text!r}'
            )
        if var_type == VariableType.INDEX_ARRAY:
            try:
                shlex.split(inner)
            except ValueError as exc:
                raise _invalid(f"global_var_list.{name}", str(exc)) from None
    return text


def check_server(server: Any, name: str) -> dict[str, Any]:
    """A host variable's ``server`` as a launch reads it: a plan keeps no hosts that
    its every launch would refuse."""
    if not isinstance(server, dict):
        raise JobError(
            ErrorCode.INVALID_PARAM_WITH_REASON,
            f"Invalid parameter [global_var_list.{name}]: a host variable takes a server object",
        )
    parse_target(server, f"global_var_list.{name}.server")
    return server


def _flag(raw: Any) -> bool:
    # "0" and "false" (query strings, YAML written by hand) are false, not non-empty strings
    if isinstance(raw, str):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return bool(raw)


def _strict_int(raw: Any, field_name: str) -> int:
    """An integer sent as a JSON integer, an integral float or integer text; JSON
    ``true`` and ``1.5`` are refused rather than read as 1."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise _invalid(field_name, f"{raw!r} is not an integer")
    if isinstance(raw, float) and not raw.is_integer():
        raise _invalid(field_name, f"{raw!r} is not an integer")
    try:
        return int(raw)
    except (TypeError, ValueError, OverflowError):
        raise _invalid(field_name, f"{raw!r} is not an integer") from None


def _description(raw: Any, field_name: str) -> str:
    if raw is None:
        return ""
    if isinstance(raw, dict | list | bool):
        raise _invalid(field_name, "a description must be text")
    return str(raw)[:MAX_DESCRIPTION]


def _definition_id(raw: Any, field_name: str) -> int:
    if raw in (None, ""):
        return 0
    value = _strict_int(raw, field_name)
    if value < 0:
        raise _invalid(field_name, "must not be negative")
    return value


def parse_definitions(raw: Any, field_name: str = "global_var_list") -> list[Variable]:
    """Variable definitions of a template (ids may be absent: the store assigns them)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid(field_name, "must be a list")
    out: list[Variable] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, dict):
            raise _invalid(field_name, "each variable is an object")
        name = check_name(item.get("name"), f"{field_name}.name")
        if name in seen:
            raise _invalid(field_name, f"variable {name!r} is defined twice")
        seen.add(name)
        raw_type = item.get("type")
        try:
            # JSON true or 1.5 is no type, not the type 1
            if isinstance(raw_type, bool) or (
                isinstance(raw_type, float) and not raw_type.is_integer()
            ):
                raise ValueError(raw_type)
            var_type = VariableType(int(raw_type or 0))
        except (TypeError, ValueError):
            raise _invalid(
                f"{field_name}.{name}.type",
                f"{item.get('type')!r} is not a variable type (1 string, 2 namespace, "
                "3 host list, 4 password, 5 associative array, 6 indexed array)",
            ) from None
        var = Variable(
            id=_definition_id(item.get("id"), f"{field_name}.{name}.id"),
            name=name,
            type=var_type,
            description=_description(item.get("description"), f"{field_name}.{name}"),
            required=_flag(item.get("required")),
            changeable=_flag(item.get("changeable")) and var_type != VariableType.HOST_LIST,
        )
        if var_type == VariableType.HOST_LIST:
            if item.get("server") not in (None, {}):
                var.server = check_server(item["server"], name)
        else:
            var.value = check_value(var_type, item.get("value"), name)
        out.append(var)
    return out


def entry_key(entry: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """How a ``global_var_list`` entry names its variable: an integer ``id`` or, when
    the id is absent, a text ``name``. JSON ``true`` or ``1.5`` is not the id 1."""
    raw_id = entry.get("id")
    if raw_id not in (None, ""):
        return _strict_int(raw_id, "global_var_list.id"), None
    name = entry.get("name")
    if name in (None, ""):
        return None, None
    if not isinstance(name, str):
        raise _invalid("global_var_list.name", f"{name!r} is not a variable name")
    return None, name


def _identify(
    entry: Mapping[str, Any],
    by_id: dict[int, Variable],
    by_name: dict[str, Variable],
    lenient: bool = False,
) -> Variable | None:
    """The variable an entry names; ``None`` for one the plan no longer has when
    ``lenient`` (bk-job ignores such values when a plan is launched)."""
    var_id, name = entry_key(entry)
    if var_id is not None:
        var = by_id.get(var_id)
        if var is None and not lenient:
            raise _invalid("global_var_list", f"the plan has no variable with id {var_id}")
        return var
    if name is None:
        raise JobError.missing("global_var_list.id|global_var_list.name")
    var = by_name.get(name)
    if var is None and not lenient:
        raise _invalid("global_var_list", f"the plan has no variable named {name!r}")
    return var


def merge_servers(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    """Two server objects as one: their lists concatenated (duplicates collapse later)."""
    out: dict[str, Any] = {k: list(v) for k, v in (a or {}).items() if isinstance(v, list)}
    for key, items in b.items():
        if isinstance(items, list):
            out.setdefault(key, []).extend(items)
    return out


def apply_overrides(
    variables: list[Variable], overrides: Any, *, lenient: bool = False
) -> list[Variable]:
    """Values given at launch (``global_var_list``) over a plan's own.

    Variables are named by ``id`` or, when it is absent, ``name``. A host variable
    named more than once gets the union of the servers (bk-monitor sends one entry
    per host); any other variable named twice takes the last value. With
    ``lenient``, values for variables the plan no longer has are ignored, as
    bk-job does, so saved callers keep working after a plan changes.
    """
    if overrides in (None, ""):
        return [replace(v) for v in variables]
    if not isinstance(overrides, list):
        raise _invalid("global_var_list", "must be a list")
    result = {v.id: replace(v) for v in variables}
    by_id = {v.id: v for v in result.values()}
    by_name = {v.name: v for v in result.values()}
    replaced: set[int] = set()
    for entry in overrides:
        if not isinstance(entry, dict):
            raise _invalid("global_var_list", "each entry is an object")
        var = _identify(entry, by_id, by_name, lenient)
        if var is None:
            continue
        if var.type == VariableType.HOST_LIST:
            if entry.get("server") is None:
                if entry.get("value") not in (None, ""):
                    raise _invalid(
                        f"global_var_list.{var.name}",
                        "a host variable takes server, not value",
                    )
                continue
            server = check_server(entry["server"], var.name)
            var.server = merge_servers(var.server if var.id in replaced else None, server)
            replaced.add(var.id)
        else:
            if entry.get("server") not in (None, {}) and "value" not in entry:
                raise _invalid(
                    f"global_var_list.{var.name}",
                    f"variable {var.name!r} is not a host variable; send value, not server",
                )
            if "value" in entry:
                var.value = check_value(var.type, entry.get("value"), var.name)
    return list(result.values())


def server_is_empty(server: Mapping[str, Any] | None) -> bool:
    if not server:
        return True
    return not any(
        isinstance(server.get(k), list) and server.get(k)
        for k in ("host_id_list", "ip_list", "dynamic_group_list", "topo_node_list")
    )


def check_required(variables: Iterable[Variable], *, hosts_only: bool = False) -> None:
    """Refuse a launch whose required variables are empty; with ``hosts_only``
    (bk-job's API path) only host variables are checked."""
    for var in variables:
        if not var.required or (hosts_only and var.type != VariableType.HOST_LIST):
            continue
        if var.type == VariableType.HOST_LIST:
            if server_is_empty(var.server):
                raise JobError(
                    ErrorCode.HOST_VARIABLE_EMPTY,
                    f"Host variable {var.name!r} is required and has no hosts",
                )
        elif not var.value:
            raise JobError(
                ErrorCode.MISSING_PARAM_WITH_NAME,
                f"Missing parameter [global_var_list.{var.name}]: the variable is required",
            )


def render(text: str, values: Mapping[str, str]) -> str:
    """``${name}`` replaced for every variable in ``values``; other ``${...}`` left alone."""
    if "${" not in text:
        return text

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        return values[name] if name in values else match.group(0)

    return REFERENCE_RE.sub(sub, text)


def references(text: str, names: Iterable[str]) -> list[str]:
    """The ``names`` that ``text`` names as ``${name}``, in order of first mention."""
    wanted = set(names)
    out: list[str] = []
    for match in REFERENCE_RE.finditer(text):
        if match.group(1) in wanted and match.group(1) not in out:
            out.append(match.group(1))
    return out


LANGUAGE_READS: dict[int, tuple[str, str]] = {
    ScriptLanguage.BAT: ("a bat script", "%{name}%"),
    ScriptLanguage.PERL: ("a Perl script", "$ENV{{{name}}}"),
    ScriptLanguage.PYTHON: ("a Python script", 'os.environ["{name}"]'),
    ScriptLanguage.POWERSHELL: ("a PowerShell script", "$env:{name}"),
    ScriptLanguage.SQL: ("an SQL script", ""),
}


def host_value_refused(mentioned: Iterable[str], host_set: Container[str], lang: int) -> str:
    """Why the hosts of a text do not run it, "" if they may: ``mentioned`` are the
    names the text gives as ``${name}`` (``references``), in order of first mention."""
    for name in mentioned:
        if name in host_set:
            return host_value_refusal(name, lang)
    return ""


def host_value_refusal(name: str, lang: int) -> str:
    """Why a step does not run: its script text names a variable whose value a host
    set, and that value would be pasted into the text as code."""
    # an IntEnum key is its int: a language this release does not know reads generically
    kind, reads = LANGUAGE_READS.get(lang, ("a script", ""))
    how = (
        f"; read it from the environment ({reads.format(name=name)}) instead"
        if reads
        else "; only values given at launch are replaced in its text"
    )
    return (
        f"jobfleet: variable {name!r} was set by a host in an earlier step, and {kind} "
        f"does not get such a value pasted into its text as ${{{name}}}{how}\n"
    )


class HostValueRefused(Exception):
    """A value a host set would be used where it could lead a path elsewhere."""


_SEPARATORS = re.compile(r"([/\\])")


def render_path(path: str, values: Mapping[str, str], host_set: Iterable[str] = ()) -> str:
    """``path`` with ``${name}`` replaced, refusing (``HostValueRefused``) a value a host
    set that holds a path separator or a NUL, or that makes a ``.`` or ``..`` part: such
    a value would take the path out of the folder the operator wrote. Values given at
    launch are the operator's own and go in as they are."""
    untrusted = [n for n in host_set if n in values]
    if not untrusted:
        return render(path, values)
    out = []
    # each part between the separators the operator wrote is checked where it lands
    for part in _SEPARATORS.split(path):
        named = references(part, untrusted)
        for name in named:
            value = values[name]
            if "/" in value or "\\" in value or "\0" in value:
                raise HostValueRefused(
                    f"the value set by a host for variable {name!r} holds a path separator or a NUL"
                )
        rendered = render(part, values)
        if named and any(p in (".", "..") for p in _SEPARATORS.split(rendered)):
            raise HostValueRefused(
                f"the value set by a host for variable {named[0]!r} makes a "
                f"{rendered!r} part of the path"
            )
        out.append(rendered)
    return "".join(out)


def _bash_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


_DOUBLE_QUOTED_ESCAPE = re.compile(r'\\([\\"$`])')


def _parenthesised(value: str) -> str | None:
    """What stands between the parentheses of an array value ``( … )``, else None."""
    stripped = value.strip()
    if stripped.startswith("(") and stripped.endswith(")"):
        return stripped[1:-1]
    return None


def _keyed_items(text: str) -> list[tuple[str, str]]:
    """The ``[key]=value`` items of an array as bash writes one (``declare -p``): a
    double-quoted value with its escapes undone, else the word as it stands."""
    items = []
    for key, raw in ASSOC_ITEM_RE.findall(text):
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = _DOUBLE_QUOTED_ESCAPE.sub(r"\1", raw[1:-1])
        items.append((key, raw))
    return items


def _array_items(value: str) -> list[str]:
    """The items of an indexed array value written ``(a b "c d")``; a value that is not
    one (a host may report anything) is a single item."""
    inner = _parenthesised(value)
    if inner is None:
        return [value] if value else []
    try:
        return shlex.split(inner)
    except ValueError:
        return [value]


def _assoc_items(value: str) -> list[tuple[str, str]]:
    """The ``["key"]=value`` items of an associative array value."""
    inner = _parenthesised(value)
    return _keyed_items(value.strip() if inner is None else inner)


def _array_literal(var: Variable, value: str) -> str:
    """A bash array assignment whose every key and item is quoted: a value is text, so
    ``$(...)``, backticks or a ``)`` in it must not become code in the prelude."""
    if var.type == VariableType.ASSOC_ARRAY:
        pairs = " ".join(f"[{_bash_quote(k)}]={_bash_quote(v)}" for k, v in _assoc_items(value))
        return f"declare -A {var.name}=({pairs})"
    items = " ".join(_bash_quote(item) for item in _array_items(value))
    return f"{var.name}=({items})"


def shell_prelude(variables: Iterable[Variable], values: Mapping[str, str]) -> str:
    """Lines that declare the variables in bash, and report changed changeable ones at exit.

    The report goes to ``$JOBFLEET_VARS_FILE`` after whatever the script wrote there
    itself: a NUL, then one ``name=value`` record per changed variable, each ended by
    a NUL, so any value survives.
    """
    lines: list[str] = []
    report: list[str] = []
    for var in variables:
        value = values.get(var.name, "")
        if var.type in (VariableType.ASSOC_ARRAY, VariableType.INDEX_ARRAY):
            lines.append(_array_literal(var, value))
        else:
            lines.append(f"{var.name}={_bash_quote(value)}")
        if not var.changeable:
            continue
        if var.type in (VariableType.ASSOC_ARRAY, VariableType.INDEX_ARRAY):
            before = f"__jobfleet_was_{var.name}"
            lines.append(f"{before}=$(declare -p {var.name}); {before}=${{{before}#*=}}")
            report.append(f'__jobfleet_report {var.name} "${before}"')
        else:
            report.append(f"__jobfleet_report {var.name} {_bash_quote(value)}")
    if report:
        lines.append(
            "__jobfleet_report() { local __now; "
            'if declare -p "$1" 2>/dev/null | grep -q "^declare -[aA]"; then '
            '__now=$(declare -p "$1"); __now=${__now#*=}; else __now=${!1}; fi; '
            '[ "$__now" = "$2" ] || printf "%s=%s\\0" "$1" "$__now"; }'
        )
        lines.append(
            "__jobfleet_exit() { local __rc=$?; { printf '\\0'; "
            + "; ".join(report)
            + '; } >>"$JOBFLEET_VARS_FILE" 2>/dev/null; exit $__rc; }'
        )
        lines.append("trap __jobfleet_exit EXIT")
    return "\n".join(lines) + "\n" if lines else ""


def parse_reported(text: str) -> dict[str, str]:
    """What a step left in ``$JOBFLEET_VARS_FILE``.

    ``name=value`` lines the script wrote itself come first and win; NUL-separated
    records from the shell's exit report follow the first NUL.
    """
    written, _, records = text.partition("\0")
    out: dict[str, str] = {}
    for record in [*records.split("\0"), *written.splitlines()]:
        name, sep, value = record.partition("=")
        name = name.strip()
        if sep and NAME_RE.match(name):
            out[name] = value[:MAX_VALUE]
    return out


def unquote_array(value: str) -> str:
    """``declare -p`` prints arrays as ``([0]="a" [1]="b")``; keep bk-job's ``(a b)`` form."""
    inner = _parenthesised(value)
    if inner is None or "[0]=" not in inner:
        return value
    return "(" + " ".join(shlex.quote(item) for _, item in _keyed_items(inner)) + ")"
