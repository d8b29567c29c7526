"""Where the CLI finds its server and credentials.

Precedence: flag > environment > bootstrap file > config file > default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobfleet.sdk import JobConfigError, read_bootstrap_file, read_config_file

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_USERNAME = "admin"
DEFAULT_BIZ = 2
DEFAULT_CONFIG = Path("~/.config/jobfleet/config.toml")

_DEFAULTS: dict[str, Any] = {
    "server": DEFAULT_SERVER,
    "app_code": None,
    "app_secret": None,
    "username": DEFAULT_USERNAME,
    "biz": DEFAULT_BIZ,
    "token": None,
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
    for name in _DEFAULTS:
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
        return read_config_file(path)
    except JobConfigError as exc:
        raise SettingsError(str(exc)) from None


def load_bootstrap(path: Path) -> dict[str, Any]:
    """The credentials in a server's ``bootstrap.json``."""
    try:
        return read_bootstrap_file(path)
    except JobConfigError as exc:
        raise SettingsError(str(exc)) from None
