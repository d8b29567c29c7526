"""The database being away is told from a fault of jobfleet, and logged in one line."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path

import asyncpg
import pytest

from jobfleet.store.outage import OutageLog, unreachable


class StateError(Exception):
    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def wrapped(cause: BaseException) -> Exception:
    try:
        raise cause
    except BaseException as exc:
        try:
            raise RuntimeError("(driver) wrapped") from exc
        except RuntimeError as outer:
            return outer


def test_an_outage_is_told_from_a_fault() -> None:
    assert unreachable(wrapped(ConnectionRefusedError(111, "Connection refused")))
    assert unreachable(wrapped(StateError("the database system is shutting down", "57P03")))
    assert unreachable(wrapped(StateError('database "x" is not currently accepting '
                                          "connections", "55000")))
    assert not unreachable(wrapped(StateError("currval of sequence is not yet defined",
                                              "55000")))
    assert not unreachable(wrapped(StateError("syntax error", "42601")))
    assert not unreachable(ValueError("a bug"))


def test_an_outage_is_one_line_then_one_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = OutageLog(log, "some_loop_failed")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(5):
            try:
                raise wrapped(ConnectionRefusedError(111, "Connection refused"))
            except RuntimeError:
                outage.failed()
        outage.ok()
        outage.ok()
        try:
            raise ValueError("a bug")
        except ValueError:
            outage.failed()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("some_loop_failed reason=database_unreachable "
                        "error=ConnectionRefusedError: [Errno 111] Connection refused")
    assert lines[1].startswith("database_back loop=some_loop_failed after=")
    assert lines[2] == "some_loop_failed" and caplog.records[2].exc_info
    assert len(lines) == 3


def test_only_a_connection_failing_is_the_database_away() -> None:
    for away in (
        ConnectionResetError(104, "Connection reset by peer"),
        ConnectionAbortedError(103, "Software caused connection abort"),
        BrokenPipeError(32, "Broken pipe"),
        TimeoutError(),
        socket.gaierror(-2, "Name or service not known"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        OSError(errno.ENETUNREACH, "Network is unreachable"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 5432, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 5432)"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    ):
        assert unreachable(wrapped(away)), away
    for fault in (
        PermissionError(errno.EACCES, "Permission denied", "/var/log/jobfleet"),
        OSError(errno.ENOSPC, "No space left on device"),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/export.csv"),
        OSError(errno.EROFS, "Read-only file system"),
        IsADirectoryError(errno.EISDIR, "Is a directory"),
    ):
        assert not unreachable(wrapped(fault)), fault


async def test_a_missing_unix_socket_is_the_database_away(tmp_path: Path) -> None:
    """While PostgreSQL restarts its socket file is gone: connecting raises ENOENT,
    which is the database away, while the same errno from a file of jobfleet is not."""
    with pytest.raises(FileNotFoundError) as connecting:
        await asyncio.open_unix_connection(str(tmp_path / ".s.PGSQL.5432"))
    assert unreachable(wrapped(connecting.value))
    with pytest.raises(FileNotFoundError) as opening:
        (tmp_path / "export.csv").read_text()
    assert not unreachable(wrapped(opening.value))


def test_a_file_fault_is_logged_as_what_it_is(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = OutageLog(log, "retention_pass_failed")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        try:
            raise wrapped(PermissionError(errno.EACCES, "Permission denied", "/srv/blobs/ab"))
        except RuntimeError:
            outage.failed()
        outage.ok()
    assert [r.getMessage() for r in caplog.records] == ["retention_pass_failed"]
    record = caplog.records[0]
    assert record.levelno == logging.ERROR and record.exc_info
    assert "database_unreachable" not in caplog.text
    assert "PermissionError: [Errno 13] Permission denied: '/srv/blobs/ab'" in caplog.text
