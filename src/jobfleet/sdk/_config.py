"""The files a client's settings come from: the CLI's TOML config file and a server's
``bootstrap.json``, read the same way by the SDK's ``from_env`` and by the CLI."""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

from jobfleet.sdk._errors import JobConfigError

CONFIG_TYPES: dict[str, type] = {
    "server": str,
    "app_code": str,
    "app_secret": str,
    "username": str,
    "biz": int,
    # a personal token (``jobfleet token create``): used instead of the app credentials
    "token": str,
}
# bootstrap.json key → config file key
BOOTSTRAP_KEYS = {
    "url": "server",
    "bk_app_code": "app_code",
    "bk_app_secret": "app_secret",
    "admin_user": "username",
}


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings a TOML config file gives, by config key, each of its type; the CLI
    reads the same file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise JobConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise JobConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # a misspelt key (``sever = …``) would otherwise end in "no credentials" or the
    # default server, far from its cause; the server's own config refuses one too
    for key in data:
        if key not in CONFIG_TYPES:
            close = difflib.get_close_matches(key, CONFIG_TYPES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise JobConfigError(
                f"config file {path}: unknown key {key!r}{hint}; "
                f"it takes {', '.join(CONFIG_TYPES)}"
            )
    values: dict[str, Any] = {}
    for name, kind in CONFIG_TYPES.items():
        value = data.get(name)
        if value in (None, ""):
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise JobConfigError(f"config file {path}: {name} must be a {kind.__name__}")
        values[name] = value
    return values


def read_bootstrap_file(path: Path) -> dict[str, Any]:
    """The credentials in a server's ``bootstrap.json``, by config key."""
    try:
        data = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobConfigError(f"cannot read bootstrap file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise JobConfigError(f"bootstrap file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise JobConfigError(f"bootstrap file {path}: expected a JSON object")
    values: dict[str, Any] = {}
    for key, name in BOOTSTRAP_KEYS.items():
        value = data.get(key)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise JobConfigError(f"bootstrap file {path}: {key} must be a string")
        values[name] = value
    return values
