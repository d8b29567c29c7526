"""The database being away is told from a fault of jobfleet, and logged in one line."""

from __future__ import annotations

import errno
import logging
import sqlite3

import pytest

from jobfleet.store.outage import OutageLog, disk_refused, unreachable


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


def sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


def test_a_disk_that_takes_no_write_is_told_from_a_fault() -> None:
    assert disk_refused(wrapped(sqlite_error("database or disk is full", 13))) == "SQLITE_FULL"
    # SQLITE_IOERR_WRITE: the extended code of a write the disk refused
    assert disk_refused(wrapped(sqlite_error("disk I/O error", 778))) == "SQLITE_IOERR"
    assert disk_refused(wrapped(OSError(errno.ENOSPC, "No space left on device"))) == "ENOSPC"
    assert disk_refused(wrapped(OSError(errno.EROFS, "Read-only file system"))) == "EROFS"
    assert disk_refused(wrapped(sqlite_error("no such table: jobs", 1))) is None
    assert disk_refused(wrapped(ConnectionRefusedError(111, "Connection refused"))) is None
    assert disk_refused(ValueError("invalid byte sequence")) is None


def test_postgresql_out_of_disk_is_a_disk_refusal_not_a_bad_message() -> None:
    # reads still work there too, so without this each result would be refused alone
    full = StateError('could not extend file "base/16384/16402": No space left on device',
                      "53100")
    assert disk_refused(wrapped(full)) == "DISK_FULL"
    assert disk_refused(wrapped(StateError("value too long", "22001"))) is None


def test_a_full_disk_is_one_line_per_loop_not_a_traceback_a_turn(
        caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = OutageLog(log, "some_loop_failed")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(5):
            try:
                raise wrapped(sqlite_error("database or disk is full", 13))
            except RuntimeError:
                outage.failed()
        outage.ok()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("some_loop_failed reason=disk_refused disk=SQLITE_FULL "
                        "error=OperationalError: database or disk is full")
    assert not caplog.records[0].exc_info
    assert lines[1].startswith("database_back loop=some_loop_failed after=")
    assert len(lines) == 2
