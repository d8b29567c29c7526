"""Telling the database being away from a fault of jobfleet, for what a node logs.

While PostgreSQL restarts, every background loop of every node fails each turn; a
traceback per turn buries the one fact an operator needs (the database is away) under
thousands of lines of driver internals. ``OutageLog`` logs that fact once when it
starts, once a minute while it lasts and once when it ends, and keeps the traceback
for failures that are not an outage."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sqlite3
import sys
from pathlib import Path

from jobfleet.logs import Spell

# seconds between the lines that say an outage goes on
REPEAT_SECONDS = 60.0

# SQLSTATEs of a database that cannot be reached or refuses this node: connection
# exceptions (08), too many connections (53300), operator intervention (57P:
# shutting down, starting up, terminated by the admin), a login refused (28) and a
# database gone (3D000): each the operator's to fix, none a fault of jobfleet
_AWAY_STATES = ("08", "53300", "57P", "28", "3D000")


# what a socket to the database reports when the server or the way to it is gone; any
# other OSError (a file not found, a permission refused, a disk full) is a fault here
_AWAY_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ENOTCONN,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
    }
)

# the drivers' own for a connection that is gone or cannot be made, by name as well:
# a wrapping of them need not carry their SQLSTATE
_AWAY_CLASSES = frozenset({"ConnectionDoesNotExistError", "ClientCannotConnectError"})

# where asyncio connects a socket: any OSError raised in there (a Unix socket missing
# while the server restarts: ENOENT) is a connection that cannot be made
_CONNECT_FRAMES = frozenset({"sock_connect", "_sock_connect", "_sock_connect_cb"})

# what the OS says of a disk that takes no more writes: full, over quota, read-only, failing
_DISK_ERRNOS = {
    errno.ENOSPC: "ENOSPC",
    errno.EDQUOT: "EDQUOT",
    errno.EROFS: "EROFS",
    errno.EIO: "EIO",
}
# and SQLite of the same (its primary result codes): it names no errno
_SQLITE_DISK_CODES = {13: "SQLITE_FULL", 10: "SQLITE_IOERR", 8: "SQLITE_READONLY"}
# PostgreSQL's disk_full: it still answers reads, as SQLite does on a full disk
_PG_DISK_FULL = "53100"


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, each once, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _socket_gone(error: OSError) -> bool:
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror):
        return True
    if error.errno in _AWAY_ERRNOS:
        return True
    # asyncio's create_connection when every address of the host failed, each its own way
    if error.errno is None and str(error).startswith("Multiple exceptions: "):
        return True
    return _raised_connecting(error)


def _raised_connecting(error: BaseException) -> bool:
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name in _CONNECT_FRAMES and str(
            frame.f_globals.get("__name__", "")
        ).startswith("asyncio."):
            return True
        tb = tb.tb_next
    return False


def disk_refused(exc: BaseException) -> str | None:
    """Why the server's disk took no write, when that is what ``exc`` is (``ENOSPC``,
    ``SQLITE_FULL``, ``EROFS``, …), else None. Reads still work then, so a probe that
    reads cannot tell it from a fault of jobfleet; a write retried once the operator
    frees space succeeds."""
    for link in exception_chain(exc):
        if isinstance(link, OSError) and link.errno in _DISK_ERRNOS:
            return _DISK_ERRNOS[link.errno]
        if isinstance(link, sqlite3.Error):
            code = getattr(link, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in _SQLITE_DISK_CODES:
                return _SQLITE_DISK_CODES[code & 0xFF]
        if getattr(link, "sqlstate", None) == _PG_DISK_FULL:
            return "DISK_FULL"
    return None


def disk_reason(exc: BaseException, path: Path | None) -> str | None:
    """:func:`disk_refused`, told as the OS would tell it: SQLite says only that the
    database "or disk" is full, so the filesystem of ``path`` is asked whether it is the
    disk (``ENOSPC``) or read-only (``EROFS``)."""
    why = disk_refused(exc)
    if why is None or not why.startswith("SQLITE_") or path is None:
        return why
    try:
        room = os.statvfs(path.parent)
    except OSError:
        return why
    if room.f_flag & os.ST_RDONLY:
        return "EROFS"
    if room.f_bavail == 0 or (why == "SQLITE_FULL" and room.f_bavail * room.f_frsize < 1 << 20):
        return "ENOSPC"
    return why


def failure_path(exc: BaseException) -> str | None:
    """The file an OS error of ``exc`` names, if any (SQLite's name none)."""
    for link in exception_chain(exc):
        if isinstance(link, OSError) and link.filename is not None:
            return str(link.filename)
    return None


def unreachable(exc: BaseException) -> bool:
    """Is ``exc`` the database being away (refused, restarting, a connection cut)?

    Only a connection's failures count: a file that cannot be written (a directory
    not writable, a disk full) is not the database being away, and is reported as
    the fault it is."""
    for link in exception_chain(exc):
        if isinstance(link, OSError) and _socket_gone(link):
            return True
        if getattr(link, "connection_invalidated", False):
            return True
        state = getattr(link, "sqlstate", None)
        if isinstance(state, str) and state.startswith(_AWAY_STATES):
            return True
        # 55000 is also a fault of a query; this one is a database closed to connections
        if state == "55000" and "not currently accepting connections" in str(link):
            return True
        if type(link).__name__ in _AWAY_CLASSES:
            return True
    return False


def reason(exc: BaseException) -> str:
    """The root cause in one line, without the driver's wrapping or a link to its docs."""
    root = exception_chain(exc)[-1]
    text = " ".join(str(root).split()) or type(root).__name__
    return f"{type(root).__name__}: {text}"[:300]


class OutageLog:
    """What a background loop logs of its failures, as ``event``."""

    def __init__(self, logger: logging.Logger, event: str) -> None:
        self.logger = logger
        self.event = event
        self._spell = Spell(
            logger, event, back=f"database_back loop={event}", every=REPEAT_SECONDS
        )

    def failed(self, fields: str = "", *args: object, exc: BaseException | None = None) -> None:
        """Call in the ``except`` block of the failed turn (or pass ``exc``). ``fields``
        say which turn failed (a step, a job); during an outage only the turns that
        log a line are named, the others are counted in the reminders."""
        if exc is None:
            exc = sys.exc_info()[1]
        disk = None if exc is None else disk_refused(exc)
        if exc is not None and disk is not None:
            # every turn fails alike until the operator frees space: one line, as for
            # a database away
            self._spell.failed(
                f"{fields} reason=disk_refused disk=%s error=%s".lstrip(), *args, disk, reason(exc)
            )
            return
        if exc is None or not unreachable(exc):
            exc_info = exc if exc is not None else True
            self.logger.error(f"{self.event} {fields}".rstrip(), *args, exc_info=exc_info)
            return
        self._spell.failed(
            f"{fields} reason=database_unreachable error=%s".lstrip(), *args, reason(exc)
        )

    def ok(self) -> None:
        """Call after a turn that worked: ends an outage with one line."""
        self._spell.ok()
