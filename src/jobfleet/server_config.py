"""The server's configuration: a TOML file, overridden by command-line flags.

Every setting has one dotted key (``port``, ``engine.agent_lost_grace``,
``retention.jobs``, ``smtp.host``) and, for most, a flag (``--port``,
``--agent-lost-grace``, ``--retain-jobs``, ``--smtp-host``). ``load`` reads the file,
lays the flags the operator gave over it, checks every value and builds the typed
``ServerSettings``. A key the server does not know, or a value of the wrong type, is
refused with a message that names the key and where it came from: a typo in a
configuration file must not quietly leave a setting at its default.

Durations may be written as numbers of seconds or as ``30m``, ``24h``, ``7d``.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jobfleet.domain.addresses import parse_networks
from jobfleet.domain.durations import parse_duration
from jobfleet.engine.notify import SmtpSettings
from jobfleet.engine.retention import RetentionSettings
from jobfleet.engine.settings import EngineSettings
from jobfleet.server import COOKIE_SECURE_MODES, ServerSettings

DEFAULT_PATH = Path("/etc/jobfleet/server.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# `jobfleet server` listens for agents on a fixed port by default (a library-built
# server takes any free one)
COMMAND_DEFAULTS: dict[str, Any] = {"agent_port": 8443}
# keys whose values are secrets: never echoed in an error message
SECRET_KEYS = frozenset({"smtp.password", "metrics_token", "database_url", "redis_url"})


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and its source."""


def _networks(values: object) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError('must be a list of CIDR ranges, e.g. ["10.0.0.0/8"]')
    parse_networks(values)
    return list(values)


# a value checker: the raw TOML or flag value in, the setting's value out
Check = Callable[[object], Any]


def _typed(kind: type, *, low: float | None = None, high: float | None = None) -> Check:
    def check(value: object) -> Any:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ValueError(f"must be {_KIND_NAMES[kind]}, not {_describe(value)}")
        if low is not None and value < low:  # type: ignore[operator]
            raise ValueError(f"must be at least {low:g}")
        if high is not None and value > high:  # type: ignore[operator]
            raise ValueError(f"must be at most {high:g}")
        return value

    return check


def _choice(*options: str) -> Check:
    def check(value: object) -> str:
        if not isinstance(value, str) or value.lower() not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value.lower()

    return check


def _path(value: object) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"must be a path (a string), not {_describe(value)}")
    return Path(value).expanduser()


def _optional_str(value: object) -> str | None:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_describe(value)}")
    return value or None


def _public_url(value: object) -> str | None:
    text = _optional_str(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError("must be an http(s) URL, e.g. https://job.example.com")
    return text.rstrip("/")


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(value: object) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Setting:
    key: str
    check: Check
    # the flag of `jobfleet server` that overrides it, if any
    flag: str | None = None


def _settings() -> dict[str, Setting]:
    port = _typed(int, low=0, high=65535)
    positive = _typed(float, low=0.001)
    top = [
        Setting("data_dir", _path, "--data-dir"),
        Setting("host", _typed(str), "--host"),
        Setting("port", port, "--port"),
        Setting("database_url", _optional_str, "--database-url"),
        Setting("redis_url", _optional_str, "--redis-url"),
        # 3.0 is 1.5 of the bus beat (2 s): a shorter ttl holds a node merely slow gone
        Setting("node_ttl", _typed(float, low=3.0, high=3600.0), None),
        Setting("log_level", _choice(*LOG_LEVELS), "--log-level"),
        Setting("log_format", _choice(*LOG_FORMATS), "--log-format"),
        Setting("heartbeat", positive, "--heartbeat"),
        Setting("max_file_size", _typed(int, low=1), "--max-file-size"),
        Setting("tls_cert", _path, "--tls-cert"),
        Setting("tls_key", _path, "--tls-key"),
        Setting("agent_port", port, "--agent-port"),
        Setting("agent_plaintext", _typed(bool), "--agent-plaintext"),
        Setting("bootstrap_token_ttl", parse_duration, "--bootstrap-token-ttl"),
        Setting("callback_allow", _networks, "--callback-allow"),
        Setting("public_url", _public_url, None),
        Setting("cookie_secure", _choice(*COOKIE_SECURE_MODES), "--cookie-secure"),
        Setting("max_body", _typed(int, low=1024), "--max-body"),
        Setting("header_timeout", _typed(float, low=0.1), "--header-timeout"),
        Setting("body_timeout", _typed(float, low=0.1), "--body-timeout"),
        Setting("idle_timeout", _typed(float, low=1.0), "--idle-timeout"),
        Setting("max_pending_connections", _typed(int, low=1), "--max-pending-connections"),
        Setting("max_api_requests", _typed(int, low=0), "--max-api-requests"),
        Setting("enroll_rate", _typed(float, low=0), "--enroll-rate"),
        Setting("enroll_burst", _typed(int, low=1), "--enroll-burst"),
        Setting("auth_failure_rate", _typed(float, low=0), "--auth-failure-rate"),
        Setting("auth_failure_burst", _typed(int, low=1), "--auth-failure-burst"),
        Setting("metrics_token", _optional_str, None),
        Setting("metrics_token_file", _path, "--metrics-token-file"),
        Setting("dangerous_rule_time", positive, None),
        Setting("dangerous_check_time", positive, None),
    ]
    flags = {
        "agent_lost_grace": "--agent-lost-grace",
        "recovery_window": "--recovery-window",
        "max_output_bytes": "--max-output-bytes",
        "cron_time_scale": "--cron-time-scale",
    }
    # the least each may be (floats are intervals: more than 0 unless listed)
    limits = {"max_output_bytes": 1024, "cron_time_scale": 1.0, "timeout_slack": 0.0,
              "cron_grace": 0.0, "max_output": 1024, "max_timeout": 1, "callback_attempts": 1,
              "callback_per_receiver": 1}
    engine = [
        Setting(
            f"engine.{f.name}",
            _typed(type(f.default), low=limits.get(f.name, 0.001)),
            flags.get(f.name),
        )
        for f in dataclasses.fields(EngineSettings)
        if f.name != "node_id"
    ]
    retention = [
        Setting("retention.jobs", lambda v: parse_duration(v, zero=True), "--retain-jobs"),
        Setting("retention.audit", lambda v: parse_duration(v, zero=True), "--retain-audit"),
        Setting("retention.blobs", lambda v: parse_duration(v, zero=True), "--retain-blobs"),
        Setting("retention.heal", lambda v: parse_duration(v, zero=True), "--retain-heal"),
        Setting("retention.interval", parse_duration),
        # a batch's ids go in one statement, and PostgreSQL's driver takes 32,767 arguments
        Setting("retention.batch", _typed(int, low=1, high=10_000)),
        Setting("retention.pause", _typed(float, low=0)),
    ]
    smtp = [
        Setting("smtp.host", _optional_str, "--smtp-host"),
        Setting("smtp.port", port, "--smtp-port"),
        Setting("smtp.from", _typed(str), "--smtp-from"),
        Setting("smtp.starttls", _typed(bool), "--smtp-starttls"),
        Setting("smtp.user", _optional_str, "--smtp-user"),
        Setting("smtp.password", _optional_str, "--smtp-password"),
        Setting("smtp.password_file", _path, None),
        Setting("smtp.timeout", positive),
    ]
    return {s.key: s for s in [*top, *engine, *retention, *smtp]}


SETTINGS = _settings()
FLAGS = {s.flag: s.key for s in SETTINGS.values() if s.flag}
# the [smtp] keys whose SmtpSettings field is named otherwise
SMTP_FIELDS = {"from": "sender", "user": "username"}
SECTIONS = frozenset(key.split(".", 1)[0] for key in SETTINGS if "." in key)


def default(key: str) -> Any:
    """The value of setting ``key`` when neither the file nor a flag gives it."""
    section, _, name = key.rpartition(".")
    if not section and name in COMMAND_DEFAULTS:
        return COMMAND_DEFAULTS[name]
    holder = {"": ServerSettings, "engine": EngineSettings, "retention": RetentionSettings,
              "smtp": SmtpSettings}[section]
    name = SMTP_FIELDS.get(name, name) if section == "smtp" else name
    field = next(f for f in dataclasses.fields(holder) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def read_file(path: Path) -> dict[str, Any]:
    """The file's settings as dotted keys; refuses what is not a known setting."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{name}] must be a table")
            for sub, item in value.items():
                flat[f"{name}.{sub}"] = item
        else:
            flat[name] = value
    for key in flat:
        if key not in SETTINGS:
            raise ConfigError(f"{path}: unknown setting {key!r}{_hint(key)}")
    return flat


def _hint(key: str) -> str:
    """A near match, for the usual typo."""
    close = difflib.get_close_matches(key, list(SETTINGS), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load(path: Path | None, overrides: Mapping[str, Any] | None = None) -> ServerSettings:
    """``ServerSettings`` from ``path`` (none: defaults only) with ``overrides`` laid over
    it, keyed by flag (``"--port"``) or dotted key (``"retention.jobs"``)."""
    values: dict[str, tuple[Any, str]] = {}
    if path is not None:
        for key, raw in read_file(path).items():
            values[key] = (raw, f"{path}: {key}")
    for name, raw in (overrides or {}).items():
        key = FLAGS.get(name, name)
        if key not in SETTINGS:
            raise ConfigError(f"unknown setting {name!r}")
        values[key] = (raw, name)
    checked: dict[str, Any] = {}
    for key, (raw, source) in values.items():
        try:
            checked[key] = SETTINGS[key].check(raw)
        except ValueError as exc:
            shown = "" if key in SECRET_KEYS else f" ({raw!r})"
            raise ConfigError(f"{source}{shown}: {exc}") from None
    return _build(checked, path)


def _build(values: dict[str, Any], path: Path | None) -> ServerSettings:
    def section(name: str) -> dict[str, Any]:
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}

    top = {**COMMAND_DEFAULTS, **{k: v for k, v in values.items() if "." not in k}}
    if "data_dir" not in top:
        where = f" or data_dir in {path}" if path else ""
        raise ConfigError(f"the server needs a data directory: give --data-dir{where}")
    token_file = top.pop("metrics_token_file", None)
    if token_file is not None:
        top["metrics_token"] = _read_secret(token_file, "metrics_token_file")
    if bool(top.get("tls_cert")) != bool(top.get("tls_key")):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    smtp = section("smtp")
    password_file = smtp.pop("password_file", None)
    if password_file is not None and smtp.get("password") is None:
        smtp["password"] = _read_secret(password_file, "smtp.password_file")
    mail: SmtpSettings | None = None
    if smtp.get("host"):
        mail = SmtpSettings(**{SMTP_FIELDS.get(k, k): v for k, v in smtp.items()})
    return ServerSettings(
        **top,
        engine=EngineSettings(**section("engine")),
        retention=RetentionSettings(**section("retention")),
        smtp=mail,
    )


def _read_secret(path: Path, key: str) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if mode & stat.S_IRWXO and os.name == "posix":
        raise ConfigError(f"{key}: {path} is readable by every user; chmod 600 (or 640) it")
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    return text
