"""Where the CLI finds its server and credentials.

Precedence: flag > environment > bootstrap file > config file > default.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_USERNAME = "admin"
DEFAULT_BIZ = 2
DEFAULT_CONFIG = Path("~/.config/jobfleet/config.toml")

# setting → the type its value must have in a config file
_FIELDS: dict[str, type] = {
    "server": str,
    "app_code": str,
    "app_secret": str,
    "username": str,
    "biz": int,
    # a personal token (``jobfleet token create``): used instead of the app credentials
    "token": str,
}
_DEFAULTS: dict[str, Any] = {
    "server": DEFAULT_SERVER,
    "app_code": None,
    "app_secret": None,
    "username": DEFAULT_USERNAME,
    "biz": DEFAULT_BIZ,
    "token": None,
}
# bootstrap.json key → setting
_BOOTSTRAP_KEYS = {
    "url": "server",
    "bk_app_code": "app_code",
    "bk_app_secret": "app_secret",
    "admin_user": "username",
}


class SettingsError(Exception):
    """A config or bootstrap file that cannot be used, or credentials that are missing."""


@dataclass(frozen=True)
class Settings:
    server: str
    app_code: str | None
    app_secret: str | None = field(repr=False)
    username: str
    biz: int
    # setting → where its value came from ("--server", "JOBFLEET_SERVER", a file, "default")
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    token: str | None = field(default=None, repr=False)


def resolve_settings(
    given: Mapping[str, tuple[Any, str] | None],
    *,
    config: Path | None,
    config_required: bool,
    bootstrap: Path | None,
) -> Settings:
    """Merge the layers; ``given`` maps a setting to ``(value, origin)`` from a flag or env var."""
    layers: list[tuple[dict[str, Any], str]] = []
    layers.append(({k: v[0] for k, v in given.items() if v is not None}, ""))
    if bootstrap is not None:
        layers.append((load_bootstrap(bootstrap), str(bootstrap)))
    if config is not None:
        path = config.expanduser()
        if path.exists() or config_required:
            layers.append((load_config(path), str(path)))
    layers.append((_DEFAULTS, "default"))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in _FIELDS:
        for layer, origin in layers:
            if layer.get(name) is not None:
                values[name] = layer[name]
                given_value = given.get(name)
                sources[name] = origin or (given_value[1] if given_value else "")
                break
        else:
            values[name] = None
            sources[name] = "unset"
    return Settings(
        server=str(values["server"]).rstrip("/"),
        app_code=values["app_code"],
        app_secret=values["app_secret"],
        username=str(values["username"]),
        biz=int(values["biz"]),
        sources=sources,
        token=values["token"],
    )


def load_config(path: Path) -> dict[str, Any]:
    """The settings in a TOML config file (keys server, app_code, app_secret, username, biz,
    token)."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    settings: dict[str, Any] = {}
    for name, kind in _FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SettingsError(f"config file {path}: {name} must be a {kind.__name__}")
        settings[name] = value
    return settings


def load_bootstrap(path: Path) -> dict[str, Any]:
    """The credentials in a server's ``bootstrap.json``."""
    try:
        data = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read bootstrap file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SettingsError(f"bootstrap file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"bootstrap file {path}: expected a JSON object")
    settings: dict[str, Any] = {}
    for key, name in _BOOTSTRAP_KEYS.items():
        value = data.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SettingsError(f"bootstrap file {path}: {key} must be a string")
        settings[name] = value
    return settings
