"""The MariaDB the SQL-step tests start: each parallel test worker starts its own, and
one must not stand in another's way."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from tests.integration import dbservers
from tests.integration.dbservers import mariadb
from tests.integration.harness import free_port


def test_a_mariadb_whose_port_was_taken_meanwhile_starts_on_another(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Between finding a port free and the server binding it, another worker's server
    may take it: the server is started again on another port, not given up."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        handed = iter([busy])
        monkeypatch.setattr(dbservers, "free_port", lambda: next(handed, None) or free_port())
        with mariadb("Pa55-for-the-port-test") as server:
            assert server.port != busy
            assert server.query("SELECT @@port;").strip() == str(server.port)


def test_a_mariadb_keeps_its_temporary_files_to_itself() -> None:
    """Servers bootstrapped at once in the shared /tmp removed each other's temporary
    tables (``ERROR 1051 Unknown table 'mysql.tmp_user_sys'``)."""
    with mariadb("Pa55-for-the-tmpdir-test") as server:
        tmpdir = Path(server.query("SELECT @@tmpdir;").strip())
        assert tmpdir.is_relative_to(server.directory), tmpdir
