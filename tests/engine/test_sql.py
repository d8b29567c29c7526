"""The run message of an SQL step: the client's argv never holds the password."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

from cryptography.fernet import Fernet

from jobfleet.domain.status import AccountType
from jobfleet.engine.sql import client_command, client_script, sql_message
from jobfleet.store.secrets import Cipher

DB = {"type": int(AccountType.MYSQL), "host": "127.0.0.1", "port": 3307, "name": "app",
      "user": "svc", "db_account_id": 5}


def test_client_commands() -> None:
    argv, env = client_command({**DB, "password": "pw"})
    assert argv[:2] == ["mysql", "--no-defaults"] and "--database=app" in argv
    assert env == {"MYSQL_PWD": "pw"}
    argv, env = client_command({**DB, "type": int(AccountType.POSTGRESQL), "port": None,
                                "password": "pw"})
    assert argv[0] == "psql" and "ON_ERROR_STOP=1" in argv and "--port=5432" in argv
    assert env["PGPASSWORD"] == "pw"
    assert all("pw" not in a for a in argv)


def test_the_message_unseals_the_password_into_the_environment() -> None:
    cipher = Cipher(Fernet.generate_key())
    step = SimpleNamespace(config={"db": {**DB, "password": cipher.encrypt("s3cret")}},
                           script_content="SELECT 1;\nJOBFLEET_SQL_x")
    template = {"lang": 6, "script": "", "args": ["x"], "account": "root", "timeout": 5,
                "env": {"A": "1"}, "max_output": 10}
    message = sql_message(template, step, cipher)  # type: ignore[arg-type]
    assert message["lang"] == 1 and message["args"] == []
    assert message["env"] == {"A": "1", "MYSQL_PWD": "s3cret"}
    assert "s3cret" not in message["script"]
    check, first, *body = message["script"].splitlines()
    assert check.startswith("command -v mysql ") and "exit 1;" in check
    end = first.rsplit("<<'", 1)[1].rstrip("'")
    assert body == ["SELECT 1;", "JOBFLEET_SQL_x", end]


def test_variables_fill_the_sql() -> None:
    cipher = Cipher(Fernet.generate_key())
    step = SimpleNamespace(config={"db": {**DB, "password": ""}},
                           script_content="SELECT '${release}', '${other}';")
    template = {"lang": 6, "script": "", "args": [], "env": {}}
    message = sql_message(template, step, cipher, {"release": "r-1"})  # type: ignore[arg-type]
    assert "SELECT 'r-1', '${other}';" in message["script"]


def test_oracle_and_db2_read_the_connection_on_stdin() -> None:
    for kind, program in ((AccountType.ORACLE, "sqlplus"), (AccountType.DB2, "db2")):
        db = {**DB, "type": int(kind), "port": None, "password": "pw"}
        script, env = client_script(db, "SELECT 1 FROM dual;")
        assert env["JOBFLEET_DB_PASSWORD"] == "pw" and env["JOBFLEET_DB_USER"] == "svc"
        if kind == AccountType.ORACLE:
            assert env["JOBFLEET_DB_TARGET"] == "@//127.0.0.1:1521/app"
            _, local = client_command({**db, "name": ""})
            assert local["JOBFLEET_DB_TARGET"] == ""
        else:
            assert env["JOBFLEET_DB_NAME"] == "app"
        assert "pw" not in script.replace("printf", "")
        assert f"command -v {program} " in script
        # the connect statement is written by printf (a builtin) into the client's stdin
        assert '"$JOBFLEET_DB_PASSWORD"' in script and f"| {program}" in script


BASH = shutil.which("bash") or "/bin/bash"


def test_the_client_reads_connect_and_sql_from_stdin(tmp_path: Path) -> None:
    """The script run by bash, with a stand-in client that records its argv and stdin."""
    for kind, program in ((AccountType.ORACLE, "sqlplus"), (AccountType.DB2, "db2")):
        record = tmp_path / f"{program}.txt"
        fake = tmp_path / "bin" / program
        fake.parent.mkdir(exist_ok=True)
        fake.write_text(f'#!/bin/sh\necho "argv: $*" > {record}\ncat >> {record}\n')
        fake.chmod(0o755)
        db = {**DB, "type": int(kind), "password": "p'w\"x", "name": "ORCL"}
        script, env = client_script(db, "SELECT 1 FROM dual;")
        done = subprocess.run([BASH, "-c", script], env={
            **env, "PATH": f"{fake.parent}:/usr/bin:/bin"}, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        argv, *stdin = record.read_text().splitlines()
        assert "p'w" not in argv
        assert any("p'w\"x" in line and "svc" in line for line in stdin), stdin
        assert "SELECT 1 FROM dual;" in stdin
    missing = subprocess.run([BASH, "-c", client_script(
        {**DB, "type": int(AccountType.ORACLE)}, "SELECT 1;")[0]],
        env={"PATH": str(tmp_path)}, capture_output=True, timeout=30)
    assert missing.returncode == 1
    assert b"the Oracle client 'sqlplus' is not installed" in missing.stderr
