"""Server-Sent Events of a job (``GET /api/jobfleet/v1/jobs/{id}/events``), parsed."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

from jobfleet.sdk._config import read_bootstrap_file, read_config_file
from jobfleet.sdk._errors import JobApiError, JobConfigError
from jobfleet.sdk._transport import (
    MAX_ANSWER_BYTES,
    parse_envelope,
    says_try_again,
    transport_error,
)

EVENTS_PATH = "/api/jobfleet/v1/jobs/{job}/events"
# reconnections in a row that bring no event before a stream is given up: enough to ride out
# a server restart, not to wait forever on a server that is gone, a wrong address or
# a certificate that will not verify
RECONNECTS = 5
# the server sends a keepalive comment every 15 s: a stream silent for this long is dead
# (a peer that vanished without a reset would otherwise hold the reader forever)
STREAM_TIMEOUT = httpx.Timeout(30.0, read=60.0)


class SseParser:
    """Server-Sent Events line by line: ``feed`` answers {"event", "id", "data"} at the
    blank line that ends an event (``data`` decoded from JSON), else None."""

    def __init__(self, max_chars: int = MAX_ANSWER_BYTES) -> None:
        self.event = "message"
        self.event_id: str | None = None
        self.data: list[str] = []
        self._size = 0
        self._max_chars = max_chars

    def feed(self, line: str) -> dict[str, Any] | None:
        if not line:
            self._size = 0
            done = None
            if self.data:
                try:
                    data = json.loads("\n".join(self.data))
                except ValueError:
                    raise JobApiError(
                        -1, f"event stream: the data of a {self.event!r} event is not JSON"
                    ) from None
                done = {"event": self.event, "id": self.event_id, "data": data}
            self.event, self.data = "message", []
            return done
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self.event = value
        elif field == "data":
            self._size += len(value)
            if self._size > self._max_chars:
                raise too_large(self._max_chars)
            self.data.append(value)
        elif field == "id":
            self.event_id = value
        return None


class SseLines:
    """A stream's text in chunks as Server-Sent Events lines: split at CRLF, CR or LF
    only, as the format says. (``str.splitlines``, and httpx's ``iter_lines`` with it,
    also splits at U+0085, U+2028 and others, which JSON carries unescaped in a host's
    output: an event cut there is no longer JSON.)"""

    def __init__(self, max_chars: int = MAX_ANSWER_BYTES) -> None:
        self._rest = ""
        self._max_chars = max_chars

    def feed(self, text: str) -> list[str]:
        text = self._rest + text
        # a CR at the end may be the first half of a CRLF
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        lines = _LINE_END.split(text[:cut])
        self._rest = lines.pop() + text[cut:]
        if len(self._rest) > self._max_chars:
            raise too_large(self._max_chars)
        return lines


def too_large(max_chars: int) -> JobApiError:
    # a stream is endless by design, but no one event of it is
    return JobApiError(
        -1,
        f"event stream: an event is larger than {max_chars} bytes (the client's max_answer_bytes)",
    )


_LINE_END = re.compile(r"\r\n|\r|\n")


def parse_sse(lines: Iterable[str], max_chars: int = MAX_ANSWER_BYTES) -> Iterator[dict[str, Any]]:
    """{"event", "id", "data"} per event; ``data`` decoded from JSON."""
    parser = SseParser(max_chars)
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event


# what a proxy answers while the node behind it restarts: open the stream again
_GATEWAY_STATUSES = frozenset({502, 503, 504})


def retry_later(response: httpx.Response) -> JobApiError | None:
    """Of an answer (read) that is not an event stream: a proxy's or the server's "not
    now", to be retried as a dropped stream, or None for an envelope with nothing to
    stream; any other error is raised."""
    try:
        parse_envelope(response)
    except JobApiError as exc:
        if (exc.code == -1 and exc.http_status in _GATEWAY_STATUSES) or says_try_again(exc):
            return exc
        raise
    return None


class Reconnects:
    """When a dropped event stream is opened again, and when it is given up."""

    def __init__(self, retry_delay: float) -> None:
        self._retry_delay = retry_delay
        self._failures = 0

    def received(self) -> None:
        self._failures = 0

    def dropped(self, exc: httpx.TransportError | JobApiError | None = None) -> float:
        """Seconds to wait before the next attempt after a stream broke or was refused
        for now (``exc``) or closed before the end; after ``RECONNECTS`` attempts in a
        row without an event, the failure as a ``JobApiError``."""
        self._failures += 1
        if self._failures > RECONNECTS:
            if exc is None:
                raise JobApiError(-1, "the event stream keeps closing before the job ends")
            if isinstance(exc, JobApiError):
                raise exc
            raise transport_error(exc, exc.request) from exc
        return self._retry_delay * self._failures


def event_query(hosts: str | None, cursor: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The query and headers of an events request resuming after ``cursor``."""
    return ({"hosts": hosts} if hosts else {}), ({"Last-Event-ID": cursor} if cursor else {})


# config file key (as the CLI's config.toml writes it) → client setting
_CONFIG_KEYS = {
    "server": "base_url",
    "app_code": "app_code",
    "app_secret": "app_secret",
    "username": "username",
    "biz": "biz",
    "token": "token",
}
DEFAULT_CONFIG = "~/.config/jobfleet/config.toml"


def _as_client_settings(values: dict[str, Any]) -> dict[str, Any]:
    return {_CONFIG_KEYS[name]: value for name, value in values.items()}


def env_settings() -> dict[str, Any]:
    """The CLI's settings: the environment over JOBFLEET_BOOTSTRAP's file over the
    config file (JOBFLEET_CONFIG, else ~/.config/jobfleet/config.toml) over defaults.

    A file named in the environment must be there and parse; the default config file
    may be absent. Anything unusable raises :class:`JobConfigError`."""
    values: dict[str, Any] = {}
    named = os.environ.get("JOBFLEET_CONFIG")
    config = Path(named or DEFAULT_CONFIG).expanduser()
    if named or config.exists():
        values |= _as_client_settings(read_config_file(config))
    boot = os.environ.get("JOBFLEET_BOOTSTRAP")
    if boot:
        values |= _as_client_settings(read_bootstrap_file(Path(boot).expanduser()))
    for key, env in (
        ("base_url", "JOBFLEET_SERVER"),
        ("app_code", "JOBFLEET_APP_CODE"),
        ("app_secret", "JOBFLEET_APP_SECRET"),
        ("username", "JOBFLEET_USERNAME"),
        ("biz", "JOBFLEET_BIZ"),
        ("token", "JOBFLEET_TOKEN"),
    ):
        if os.environ.get(env):
            values[key] = os.environ[env]
    values.setdefault("base_url", "http://127.0.0.1:8080")
    values.setdefault("username", "admin")
    values.setdefault("biz", 2)
    missing = [k for k in ("app_code", "app_secret") if not values.get(k)]
    if missing and not values.get("token"):
        raise JobConfigError(
            "set JOBFLEET_TOKEN, or JOBFLEET_APP_CODE and JOBFLEET_APP_SECRET "
            "(or JOBFLEET_BOOTSTRAP, or a config file), first"
        )
    return values
