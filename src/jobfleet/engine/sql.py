"""SQL steps: a statement file run on each target host through the database's own client.

The step keeps a snapshot of its database account (type, host, port, database, user and
the still encrypted password), as bk-job's step instances do, so a later change to the
account does not change a job already made. At dispatch the step becomes a shell task
that feeds the SQL to ``mysql`` or ``psql`` on standard input; the password travels in
the task's environment (``MYSQL_PWD`` / ``PGPASSWORD``), never on a command line, and
the client's exit status is the host's exit code.
"""

from __future__ import annotations

import secrets
import shlex
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.status import AccountType, ScriptLanguage
from jobfleet.store.secrets import Cipher

CONNECT_TIMEOUT = 10


def _delimiter(sql: str) -> str:
    lines = set(sql.splitlines())
    while True:
        token = f"JOBFLEET_SQL_{secrets.token_hex(8)}"
        if token not in lines:
            return token


def client_command(db: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The client's argv (no secret in it) and the environment that carries the password."""
    password = str(db.get("password") or "")
    if int(db["type"]) == AccountType.POSTGRESQL:
        argv = [
            "psql",
            "-X",
            "--no-password",
            "--quiet",
            "-v",
            "ON_ERROR_STOP=1",
            f"--host={db['host']}",
            f"--port={db['port'] or 5432}",
            f"--username={db['user']}",
        ]
        if db.get("name"):
            argv.append(f"--dbname={db['name']}")
        env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT)}
        return argv, env
    argv = [
        "mysql",
        "--no-defaults",
        f"--connect-timeout={CONNECT_TIMEOUT}",
        f"--host={db['host']}",
        f"--port={db['port'] or 3306}",
        f"--user={db['user']}",
    ]
    if db.get("name"):
        argv.append(f"--database={db['name']}")
    return argv, {"MYSQL_PWD": password}


def sql_message(template: dict[str, Any], step: Row[Any], cipher: Cipher) -> dict[str, Any]:
    """The run message of an SQL step: a shell task feeding the SQL to the client."""
    db = dict((step.config or {}).get("db") or {})
    if db.get("password"):
        db["password"] = cipher.decrypt(str(db["password"]))
    argv, env = client_command(db)
    sql = step.script_content or ""
    if not sql.endswith("\n"):
        sql += "\n"
    end = _delimiter(sql)
    script = f"{shlex.join(argv)} <<'{end}'\n{sql}{end}\n"
    return {
        **template,
        "lang": int(ScriptLanguage.SHELL),
        "script": script,
        "args": [],
        "env": {**template.get("env", {}), **env},
    }
