"""Structured logging for every jobfleet process, uvicorn's loggers included.

jobfleet logs events as ``event key=value key=value`` messages. ``setup`` sends every
record (jobfleet's and uvicorn's alike) through one formatter:

- ``text``: ``2026-01-01T12:00:00.123Z level=INFO logger=jobfleet.server server_started …``
- ``json``: one object per line, ``{"time", "level", "logger", "message", …}`` with the
  ``key=value`` fields of the message as members of their own (``message`` holds the
  event name), and ``exc`` with the traceback when there is one.

Secrets do not belong in a log line, and no caller puts one there; as a second
guard, the password of a URL (``scheme://user:secret@host``) and the value of a field
named like a secret (``password=``, ``secret=``, ``token=``) are masked in both formats.
``debug`` is jobfleet's own: libraries log from ``info`` up whatever the level, for at
debug they dump what they carry (uvicorn and websockets every handshake header, an
agent's credential among them, and every frame; aiosqlite every statement's parameters).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

FORMATS = ("text", "json")
RESERVED = frozenset({"time", "level", "logger", "message", "exc"})
MASK = "***"

# `event key=value …`: an event name, then fields; a value runs to the next ` key=`
_EVENT = re.compile(r"([a-z][a-z0-9_.]*)((?: [A-Za-z_][A-Za-z0-9_.]*=.*)?)", re.DOTALL)
_FIELD = re.compile(r" ([A-Za-z_][A-Za-z0-9_.]*)=(.*?)(?= [A-Za-z_][A-Za-z0-9_.]*=|$)", re.DOTALL)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_SECRET_FIELD = re.compile(
    r"(?i)\b((?:[a-z_]*_)?(?:password|passwd|secret|token))=(\S+)"
)
_SECRET_NAME = re.compile(r"(?i)^(?:[a-z_]*_)?(?:password|passwd|secret|token)$")


def mask(text: str) -> str:
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    return _SECRET_FIELD.sub(rf"\1={MASK}", text)


def parse(message: str) -> tuple[str, dict[str, str]]:
    """``("event", {key: value})`` of a jobfleet message; other text comes back whole
    with no fields."""
    match = _EVENT.fullmatch(message)
    if match is None:
        return message, {}
    fields: dict[str, str] = {}
    for key, value in _FIELD.findall(match.group(2)):
        name = f"{key}_" if key in RESERVED else key
        fields[name] = MASK if _SECRET_NAME.match(key) else _URL_PASSWORD.sub(
            rf"\1{MASK}@", value)
    return match.group(1), fields


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} level={record.levelname} logger={record.name} "
            f"{mask(record.getMessage())}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message, fields = parse(record.getMessage())
        entry: dict[str, object] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message if fields else mask(message),
            **fields,
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


# what Alembic says at INFO on every start that tells an operator nothing: the plugins it
# loaded and its dialect, once per migration context; its "Running upgrade" lines stay
_ALEMBIC_CHATTER = ("setup plugin ", "Context impl ", "Will assume ")


def _said_here_or_not_debug(record: logging.LogRecord) -> bool:
    # only its INFO chatter: at debug Alembic is a library like the others
    if record.name.startswith("alembic.") and record.levelno == logging.INFO:
        return not str(record.msg).startswith(_ALEMBIC_CHATTER)
    return record.levelno >= logging.INFO or record.name.partition(".")[0] == "jobfleet"


def setup(level: str = "info", fmt: str = "text") -> None:
    """One handler on the root logger, on stderr; uvicorn's loggers hand their records to
    it (the server builds uvicorn with ``log_config=None``)."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: choose from {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_said_here_or_not_debug)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # uvicorn sets its own when it starts


class Spell:
    """A failure a loop meets on every turn while something it needs is away (Redis,
    the database): a line when the spell starts, then one a minute saying how long it
    has lasted, and (with ``back``) one when a turn works again. A line per turn would
    bury everything else in the log under thousands of the same line.

    A failure after ``every`` seconds without one starts a new spell, so a loop that
    cannot tell when it works again (no ``ok``) still reports each outage."""

    def __init__(
        self, logger: logging.Logger, event: str, back: str | None = None, every: float = 60.0
    ) -> None:
        self.logger = logger
        self.event = event
        self.back = back
        self.every = every
        self._since: float | None = None
        self._said = 0.0
        self._failed = 0.0
        # failures of the spell under way, told in its reminders and its last line
        self.count = 0

    def failed(self, fields: str = "", *args: object, level: int = logging.WARNING) -> bool:
        """Count a failure; True when this one was logged (the spell's first, or a
        reminder)."""
        now = time.monotonic()
        said = True
        if self._since is None or now - self._failed >= self.every:
            self._since = self._said = now
            self.count = 1
            self.logger.log(level, f"{self.event} {fields}".rstrip(), *args)
        else:
            self.count += 1
            if now - self._said >= self.every:
                self._said = now
                lasted = f"for={now - self._since:.0f}s failures={self.count}"
                self.logger.log(level, f"{self.event} {lasted} {fields}".rstrip(), *args)
            else:
                said = False
        self._failed = now
        return said

    def ok(self) -> None:
        if self._since is None:
            return
        lasted, self._since = time.monotonic() - self._since, None
        if self.back is not None:
            self.logger.info("%s after=%.1fs failures=%d", self.back, lasted, self.count)
