"""Real database servers on loopback for SQL steps: a MariaDB and a PostgreSQL, each in its
own temporary directory, with one password-protected user and database.

A server that cannot start here (its binaries missing) skips the tests that need it;
``.ci/run`` installs both."""

from __future__ import annotations

import os
import shutil
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
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120,
                          **kwargs)  # type: ignore[call-overload]


@contextmanager
def mariadb(password: str) -> Iterator[DbServer]:
    mariadbd = shutil.which("mariadbd") or shutil.which("mysqld")
    if mariadbd is None or shutil.which("mysql_install_db") is None or not shutil.which("mysql"):
        pytest.skip("MariaDB is not installed (.ci/run installs mariadb-server)")
    work = Path(tempfile.mkdtemp(prefix="jobfleet-mariadb-"))
    user = ["--user=root"] if os.geteuid() == 0 else []
    _run(["mysql_install_db", "--no-defaults", f"--datadir={work}/data", *user,
          "--auth-root-authentication-method=normal", "--skip-test-db"])
    port = free_port()
    sock = work / "sock"
    with open(work / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={work}/data", f"--socket={sock}",
             f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
             f"--pid-file={work}/pid", "--innodb-buffer-pool-size=16M", *user],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = ["mysql", "--no-defaults", f"--socket={sock}", "-uroot"]
        deadline = time.monotonic() + 120
        while subprocess.run([*admin, "-e", "SELECT 1"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "server.log").read_text())
            time.sleep(0.1)
        _run([*admin], input=(
            f"CREATE DATABASE {DATABASE};\n"
            f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{password}';\n"
            f"GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';\n"))
        yield DbServer(port, USER, password, DATABASE, work, [*admin, "--batch",
                                                              "--skip-column-names"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


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
