"""The run message of an SQL step: the client's argv never holds the password."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet

from jobfleet.domain.protocol import exact_script
from jobfleet.domain.scripts import exact_text, stored_script
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


def test_the_step_timeout_bounds_each_statement_on_the_server() -> None:
    # a few seconds past the step's timeout: the agent's kill at the timeout ends the host
    # as timed out, where a MariaDB bound firing first ends BENCHMARK() with exit status 0
    argv, _ = client_command({**DB, "password": "pw"}, 30)
    assert argv[-1] == ("--init-command=SET @jobfleet_step_timeout = 30"
                        " /*M!100101 , SESSION max_statement_time = 33 */")
    _, env = client_command({**DB, "type": int(AccountType.POSTGRESQL), "password": "pw"}, 30)
    assert env["PGOPTIONS"] == "-c statement_timeout=33000"
    # a step longer than a server's longest bound gets that bound, not a refused connection
    argv, _ = client_command({**DB, "password": "pw"}, 40_000_000)
    assert argv[-1].endswith("max_statement_time = 31536000 */")
    _, env = client_command({**DB, "type": int(AccountType.POSTGRESQL), "password": "pw"},
                            3_000_000)
    assert env["PGOPTIONS"] == "-c statement_timeout=2147483647"
    # no timeout, no bound
    argv, _ = client_command({**DB, "password": "pw"})
    assert not any(a.startswith("--init-command") for a in argv)
    _, env = client_command({**DB, "type": int(AccountType.POSTGRESQL), "password": "pw"})
    assert "PGOPTIONS" not in env


def test_psql_checks_for_a_gone_client_before_the_sql() -> None:
    db = {**DB, "type": int(AccountType.POSTGRESQL), "password": "pw"}
    script, _ = client_script(db, "SELECT 1;")
    preamble = script.index("client_connection_check_interval")
    assert preamble < script.index("SELECT 1;")
    mysql, _ = client_script({**DB, "password": "pw"}, "SELECT 1;")
    assert "client_connection_check_interval" not in mysql


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
    assert check.startswith("if command -v mariadb ") and "exit 1;" in check
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
        connect = env["JOBFLEET_DB_CONNECT"]
        if kind == AccountType.ORACLE:
            assert 'CONNECT svc/"pw"@//127.0.0.1:1521/app\n' in connect
            _, local = client_command({**db, "name": ""})
            assert 'CONNECT svc/"pw"\n' in local["JOBFLEET_DB_CONNECT"]
        else:
            assert connect == "CONNECT TO app USER 'svc' USING 'pw';\n"
            _, bare = client_command({**db, "name": ""})
            assert bare["JOBFLEET_DB_CONNECT"] == ""
        assert "pw" not in script.replace("printf", "")
        assert f"command -v {program} " in script
        # the connect statement is written by printf (a builtin) into the client's stdin,
        # as an argument, never as the format
        assert "printf '%s' \"$JOBFLEET_DB_CONNECT\"" in script and f"| {program}" in script




def _stub(tmp_path: Path, program: str) -> Path:
    """A stand-in client that records its argv and standard input."""
    record = tmp_path / f"{program}.txt"
    fake = tmp_path / "bin" / program
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f'#!/bin/sh\necho "argv: $*" > {record}\ncat >> {record}\n')
    fake.chmod(0o755)
    return record


def _run(script: str, env: dict[str, str], bin_dir: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["/bin/sh", "-c", script], env={
        **env, "PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, timeout=30)


def test_the_client_reads_connect_and_sql_from_stdin(tmp_path: Path) -> None:
    """The script run by /bin/sh, with a stand-in client that records its argv and stdin."""
    for kind, program in ((AccountType.ORACLE, "sqlplus"), (AccountType.DB2, "db2")):
        record = _stub(tmp_path, program)
        db = {**DB, "type": int(kind), "password": "p'w x", "name": "ORCL"}
        script, env = client_script(db, "SELECT 1 FROM dual;")
        done = _run(script, env, tmp_path / "bin")
        assert done.returncode == 0, done.stderr
        argv, *stdin = record.read_text().splitlines()
        assert "p'w" not in argv
        assert any("w x" in line and "svc" in line for line in stdin), stdin
        assert "SELECT 1 FROM dual;" in stdin
    missing = subprocess.run(["/bin/sh", "-c", client_script(
        {**DB, "type": int(AccountType.ORACLE)}, "SELECT 1;")[0]],
        env={"PATH": str(tmp_path)}, capture_output=True, timeout=30)
    assert missing.returncode == 1
    assert b"the Oracle client 'sqlplus' is not installed" in missing.stderr


HARD = "a'b c;d%s%%e$HOME\\f\\n`x`$(id)!&g"


def test_oracle_gets_every_hard_password_verbatim(tmp_path: Path) -> None:
    record = _stub(tmp_path, "sqlplus")
    db = {**DB, "type": int(AccountType.ORACLE), "user": "ap%sp", "password": HARD,
          "name": "svc.example", "port": 1522}
    script, env = client_script(db, "SELECT 1 FROM dual;")
    assert HARD not in script
    done = _run(script, env, tmp_path / "bin")
    assert done.returncode == 0, done.stderr
    argv, *stdin = record.read_text().splitlines()
    assert argv == "argv: -S -L /nolog"
    assert stdin[:6] == [
        "WHENEVER SQLERROR EXIT FAILURE",
        "WHENEVER OSERROR EXIT FAILURE",
        "SET DEFINE OFF",
        f'CONNECT "ap%sp"/"{HARD}"@//127.0.0.1:1522/svc.example',
        "SET DEFINE ON",
        "SELECT 1 FROM dual;",
    ]
    assert stdin[-1] == "EXIT"


def test_db2_gets_every_hard_password_quoted(tmp_path: Path) -> None:
    record = _stub(tmp_path, "db2")
    password = HARD + '"q'
    db = {**DB, "type": int(AccountType.DB2), "user": "o'k%d", "password": password,
          "name": "SAMPLE"}
    script, env = client_script(db, "SELECT 1 FROM sysibm.sysdummy1;")
    done = _run(script, env, tmp_path / "bin")
    assert done.returncode == 0, done.stderr
    argv, *stdin = record.read_text().splitlines()
    assert argv == "argv: -t +p -s" and HARD not in argv
    quoted = password.replace("'", "''")
    assert stdin[0] == f"CONNECT TO SAMPLE USER 'o''k%d' USING '{quoted}';"
    assert stdin[1] == "SELECT 1 FROM sysibm.sysdummy1;"
    assert stdin[-2:] == ["CONNECT RESET;", "TERMINATE;"]


def test_an_account_the_client_cannot_take_fails_the_host(tmp_path: Path) -> None:
    """A row made before the checks: the host fails with the reason, the client never runs."""
    bad = [
        (AccountType.ORACLE, {"password": 'pw"x'}, "[db_password]"),
        (AccountType.ORACLE, {"name": "svc\nHOST id"}, "[db_name]"),
        (AccountType.DB2, {"user": "u\rQUIT"}, "[account]"),
        (AccountType.DB2, {"password": "p\nx"}, "[db_password]"),
        (AccountType.DB2, {"name": "SAMPLE USER x"}, "[db_name]"),
        (AccountType.MYSQL, {"name": "app\x00"}, "[db_name]"),
        (AccountType.POSTGRESQL, {"host": "h\nx"}, "[db_host]"),
    ]
    for kind, change, field in bad:
        program = {AccountType.ORACLE: "sqlplus", AccountType.DB2: "db2",
                   AccountType.MYSQL: "mysql", AccountType.POSTGRESQL: "psql"}[kind]
        record = _stub(tmp_path, program)
        record.unlink(missing_ok=True)
        db = {**DB, "type": int(kind), "password": "pw", **change}
        script, env = client_script(db, "SELECT 1;")
        assert env == {}
        done = _run(script, env, tmp_path / "bin")
        assert done.returncode == 1
        assert b"cannot be used" in done.stderr and field.encode() in done.stderr
        assert b"pw" not in done.stderr
        assert not record.exists()


def test_a_host_with_only_the_mariadb_client_runs_it(tmp_path: Path) -> None:
    """MariaDB 11 installs its client as ``mariadb`` (``mysql`` is a deprecated, optional
    link): a host without ``mysql`` runs ``mariadb`` instead of failing the step."""
    real = shutil.which("mariadb")
    if real is None:
        pytest.skip("the MariaDB client is not installed")
    only = tmp_path / "only"
    only.mkdir()
    (only / "mariadb").symlink_to(real)
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script, env = client_script({**DB, "port": port, "password": "pw"}, "SELECT 1;")
    done = subprocess.run(["/bin/sh", "-c", script], env={**env, "PATH": str(only)},
                          capture_output=True, timeout=60)
    assert b"not installed" not in done.stderr, done.stderr
    assert b"Can't connect" in done.stderr and done.returncode == 1, done.stderr
    # with neither, the line names both
    missing = subprocess.run(["/bin/sh", "-c", script], env={**env, "PATH": str(tmp_path)},
                             capture_output=True, timeout=30)
    assert missing.returncode == 1
    assert b"'mysql' (or 'mariadb') is not installed" in missing.stderr, missing.stderr


def test_sql_that_is_not_utf8_reaches_the_client_as_its_bytes() -> None:
    """A GBK dump is fed to the client byte for byte: the step keeps its bytes in the
    config, and the run message carries them as ``script_b64``."""
    cipher = Cipher(Fernet.generate_key())
    sql = b"INSERT INTO t VALUES ('\xd6\xd0\xce\xc4', '${release}');\n"
    content, config = stored_script(exact_text(sql), {"db": {**DB, "password": ""}})
    assert content != sql.decode("latin-1") and config is not None
    step = SimpleNamespace(config=config, script_content=content)
    template = {"lang": 6, "script": "", "args": [], "env": {}}
    built = sql_message(template, step, cipher, {"release": "r-1"})  # type: ignore[arg-type]
    message = exact_script(built)
    sent = base64.b64decode(message["script_b64"])
    assert b"INSERT INTO t VALUES ('\xd6\xd0\xce\xc4', 'r-1');\n" in sent
