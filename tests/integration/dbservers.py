"""Real database servers on loopback for SQL steps: a MariaDB and a PostgreSQL, each in its
own temporary directory, with one password-protected user and database.

A server that cannot start here (its binaries missing) skips the tests that need it;
``.ci/run`` installs both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.integration.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
USER = "sqlapp"
# a second user, for passwords a test sets itself
OTHER_USER = "sqlother"
DATABASE = "appdb"


@dataclass
class DbServer:
    port: int
    user: str
    password: str
    database: str
    directory: Path
    # runs SQL as the server's administrator and answers what it prints
    admin: list[str]

    def query(self, sql: str) -> str:
        return _run([*self.admin], input=sql).stdout


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        # what the tool said is the only clue to why it failed
        raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done  # type: ignore[no-any-return]


# how many times a MariaDB server that did not come up is started again, on another port
MARIADB_STARTS = 3


class _NotStarted(Exception):
    """A MariaDB server that did not come up: the port it was given was taken meanwhile,
    or it failed; what it wrote tells why."""


@contextmanager
def mariadb(password: str) -> Iterator[DbServer]:
    mariadbd = shutil.which("mariadbd") or shutil.which("mysqld")
    if mariadbd is None or shutil.which("mysql_install_db") is None or not shutil.which("mysql"):
        pytest.skip("MariaDB is not installed (.ci/run installs mariadb-server)")
    work = Path(tempfile.mkdtemp(prefix="jobfleet-mariadb-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        own = _install_mariadb(work)
        failures: list[str] = []
        while proc is None:
            try:
                proc, port, admin = _start_mariadb(mariadbd, work, own, len(failures))
            except _NotStarted as exc:
                failures.append(str(exc))
                if len(failures) == MARIADB_STARTS:
                    raise RuntimeError("MariaDB did not start:\n" + "\n".join(failures)) from None
        _run([*admin], input=(
            f"CREATE DATABASE {DATABASE};\n"
            f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{password}';\n"
            f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';\n"))
        yield DbServer(port, USER, password, DATABASE, work, [*admin, "--batch",
                                                              "--skip-column-names"])
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def _install_mariadb(work: Path) -> list[str]:
    """The data directory of a server, bootstrapped once in ``work`` (so that servers other
    test workers start at the same moment share nothing with it); answers the options
    the server is to be started with."""
    tmp = work / "tmp"
    tmp.mkdir(parents=True)
    user = ["--user=root"] if os.geteuid() == 0 else []
    own = [f"--tmpdir={tmp}", "--innodb-buffer-pool-size=16M", *user]
    # options it does not know itself go to the server it bootstraps the data with
    argv = ["mysql_install_db", "--no-defaults", f"--datadir={work / 'data'}",
            "--auth-root-authentication-method=normal", "--skip-test-db", *own]
    # in a session of its own: the server it bootstraps with is its child, and would
    # run on if only the script were killed
    installer = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, start_new_session=True)
    try:
        said, _ = installer.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(installer.pid, signal.SIGKILL)
        said, _ = installer.communicate()
        raise RuntimeError(f"mysql_install_db did not finish in 120 s:\n{said}") from None
    if installer.returncode != 0:
        raise RuntimeError(f"mysql_install_db exited {installer.returncode}:\n{said}")
    return own


def _start_mariadb(mariadbd: str, work: Path, own: list[str],
                   attempt: int) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    """A server on the data of ``work``, on a port just found free, with its socket, pid
    and log in ``work`` too; returned once it answers on its socket."""
    sock, log_path = work / f"sock{attempt}", work / f"server{attempt}.log"
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={work / 'data'}", f"--socket={sock}",
             f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
             f"--pid-file={work}/pid{attempt}", *own],
            stdout=log, stderr=subprocess.STDOUT)
    admin = ["mysql", "--no-defaults", f"--socket={sock}", "-uroot", "--connect-timeout=10"]
    # the server binds its port before it opens its socket, and stops if the port was
    # taken since free_port found it: an answer on the socket is this server on the port
    deadline = time.monotonic() + 120
    while not _answers(admin):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise _NotStarted(f"port {port}: " + log_path.read_text(errors="replace")[-4000:])
        time.sleep(0.1)
    return proc, port, admin


def _answers(admin: list[str]) -> bool:
    try:
        return subprocess.run([*admin, "-e", "SELECT 1"], capture_output=True,
                              timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def postgresql(password: str) -> Iterator[DbServer]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    script = ROOT / "scripts" / "pg-cluster.sh"
    if subprocess.run([script, "bindir"], capture_output=True).returncode != 0:
        pytest.skip("PostgreSQL is not installed")
    work = Path(tempfile.mkdtemp(prefix="jobfleet-pg-"))
    work.chmod(0o755)  # the cluster runs as its own OS user when we are root
    cluster = work / "cluster"
    url = _run([script, "start", str(cluster)]).stdout.strip()
    try:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        # the throwaway cluster trusts loopback; make this user prove its password
        hba = cluster / "data" / "pg_hba.conf"
        hba.write_text(f"host all {USER},{OTHER_USER} 127.0.0.1/32 scram-sha-256\n"
                       + hba.read_text())
        admin = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--host=127.0.0.1",
                 f"--port={port}", "--username=jobfleet", "--dbname=postgres"]
        _run([*admin], input=(
            f"CREATE ROLE {USER} LOGIN PASSWORD '{password}';\n"
            f"CREATE DATABASE {DATABASE} OWNER {USER};\n"
            "SELECT pg_reload_conf();\n"))
        yield DbServer(port, USER, password, DATABASE, work, [*admin, "-A", "-t"])
    finally:
        subprocess.run([script, "stop", str(cluster)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
