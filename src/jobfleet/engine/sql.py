"""SQL steps: a statement file run on each target host through the database's own client.

The step keeps a snapshot of its database account (type, host, port, database, user and
the still encrypted password), as bk-job's step instances do, so a later change to the
account does not change a job already made. At dispatch the step becomes a shell task
that feeds the SQL to the database's client on standard input: ``mariadb`` or ``mysql``
(MySQL and MariaDB), ``psql`` (PostgreSQL), ``sqlplus`` (Oracle) or the ``db2`` command
line processor (DB2). The password travels in the task's environment, never on a command
line: ``MYSQL_PWD`` / ``PGPASSWORD`` for the first two; for Oracle and DB2 the whole
connect statement, its values quoted as the client requires (``domain.db_connect``),
travels in ``JOBFLEET_DB_CONNECT`` and a shell builtin (``printf '%s'``, never the value
as a format) writes it into the client's standard input. The client's exit status is the
host's exit code; a host without the client fails at once with a line that names the
missing program, and an account whose values the client cannot take (one made before
they were checked) fails with a line that says why.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row

from jobfleet.domain.db_connect import connect_problem, db2_connect, oracle_connect
from jobfleet.domain.scripts import loaded_script
from jobfleet.domain.status import AccountType, ScriptLanguage
from jobfleet.domain.variables import host_value_refused, references, render
from jobfleet.engine.tracking import REFUSED
from jobfleet.store.secrets import Cipher

CONNECT_TIMEOUT = 10
# the longest statement bound each server takes: a longer one refuses the connection
PG_MAX_STATEMENT_MS = 2_147_483_647
MARIADB_MAX_STATEMENT_S = 31_536_000
# how long past the step's timeout a server lets a statement run: the agent's kill at the
# timeout is what ends a host (status 102). A MariaDB bound that fired first would end
# ``BENCHMARK()`` or ``SLEEP()`` with no error, and the host would pass as successful.
STATEMENT_GRACE_S = 3
# bk-job's SQL task templates end a host whose client is missing with ``job_fail``
# (exit status 1, host status 104)
CLIENT_MISSING_EXIT = 1
CLIENTS = {
    AccountType.MYSQL: ("mysql", "MySQL"),
    AccountType.POSTGRESQL: ("psql", "PostgreSQL"),
    AccountType.ORACLE: ("sqlplus", "Oracle"),
    AccountType.DB2: ("db2", "DB2"),
}
# the shell variable naming the MySQL client the host has
MYSQL_CLIENT_VAR = "jobfleet_mysql_client"
# Oracle and DB2 read their connect statement from the environment in the task's shell
PRINT_CONNECT = "printf '%s' \"$JOBFLEET_DB_CONNECT\""
# psql reads this before the step's SQL. A stopped job SIGKILLs the client, and a
# PostgreSQL server notices a gone client during a statement only with this setting
# (14 and later; older servers have no such row, and ``\o`` keeps the answer out of
# the log). psql names no line of standard input in its messages: nothing moves.
PSQL_PREAMBLE = (
    "\\o /dev/null\n"
    "SELECT set_config(name, '1000', false) FROM pg_settings"
    " WHERE name = 'client_connection_check_interval';\n"
    "\\o\n"
)


def _delimiter(sql: str) -> str:
    lines = set(sql.splitlines())
    while True:
        token = f"JOBFLEET_SQL_{secrets.token_hex(8)}"
        if token not in lines:
            return token


def client_command(db: dict[str, Any], timeout: int = 0) -> tuple[list[str], dict[str, str]]:
    """The client's argv (no secret in it) and the environment that carries the password.

    A ``timeout`` (the step's, in seconds) also bounds each statement on the MySQL /
    MariaDB and PostgreSQL server, a few seconds past it: the agent kills the client at
    the step's timeout, and a server does not notice a gone client while it works, so
    the statement would run on, holding its locks."""
    password = str(db.get("password") or "")
    kind = int(db["type"])
    if kind == AccountType.POSTGRESQL:
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
        if timeout > 0:
            bound = min((timeout + STATEMENT_GRACE_S) * 1000, PG_MAX_STATEMENT_MS)
            env["PGOPTIONS"] = f"-c statement_timeout={bound}"
        return argv, env
    if kind in (AccountType.ORACLE, AccountType.DB2):
        name = str(db.get("name") or "")
        user = str(db["user"])
        if kind == AccountType.ORACLE:
            # with a service name, the listener at host:port; without, the host's own
            # instance (ORACLE_SID), as bk-job connects
            port = db["port"] or 1521
            target = f"@//{db['host']}:{port}/{name}" if name else ""
            env = {"JOBFLEET_DB_CONNECT": oracle_connect(user, password, target)}
            return ["sqlplus", "-S", "-L", "/nolog"], env
        # without a database alias the SQL connects itself, as in bk-job
        env = {"JOBFLEET_DB_CONNECT": db2_connect(name, user, password) if name else ""}
        return ["db2", "-t", "+p", "-s"], env
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
    if timeout > 0:
        # max_statement_time is MariaDB's (10.1.1 and later); MySQL skips the ``/*M!`` part
        bound = min(timeout + STATEMENT_GRACE_S, MARIADB_MAX_STATEMENT_S)
        argv.append(
            f"--init-command=SET @jobfleet_step_timeout = {timeout}"
            f" /*M!100101 , SESSION max_statement_time = {bound} */"
        )
    return argv, {"MYSQL_PWD": password}


def client_check(kind: int) -> str:
    """A shell line that fails the host when the database's client is not installed."""
    if kind == AccountType.MYSQL:
        # MariaDB 11 installs its client as ``mariadb``; ``mysql`` is then an optional,
        # deprecated link that warns on every run. Either speaks to MySQL and MariaDB.
        message = (
            "jobfleet: the MySQL client 'mysql' (or 'mariadb') is not installed on this"
            " host (PATH)"
        )
        return (
            f"if command -v mariadb >/dev/null 2>&1; then {MYSQL_CLIENT_VAR}=mariadb; "
            f"elif command -v mysql >/dev/null 2>&1; then {MYSQL_CLIENT_VAR}=mysql; "
            f"else echo {shlex.quote(message)} >&2; exit {CLIENT_MISSING_EXIT}; fi\n"
        )
    program, system = CLIENTS.get(AccountType(kind), ("mysql", "MySQL"))
    message = f"jobfleet: the {system} client '{program}' is not installed on this host (PATH)"
    return (
        f"command -v {program} >/dev/null 2>&1 || "
        f"{{ echo {shlex.quote(message)} >&2; exit {CLIENT_MISSING_EXIT}; }}\n"
    )


def client_script(db: dict[str, Any], sql: str, timeout: int = 0) -> tuple[str, dict[str, str]]:
    """The shell script that runs ``sql`` through the client, and its environment."""
    kind = int(db["type"])
    problem = connect_problem(
        kind,
        user=str(db.get("user") or ""),
        password=str(db.get("password") or ""),
        name=str(db.get("name") or ""),
        host=str(db.get("host") or ""),
    )
    if problem is not None:
        message = f"jobfleet: the database account cannot be used: {problem.message}"
        return f"echo {shlex.quote(message)} >&2; exit {CLIENT_MISSING_EXIT}\n", {}
    argv, env = client_command(db, timeout)
    if not sql.endswith("\n"):
        sql += "\n"
    end = _delimiter(sql)
    body = f"<<'{end}'\n{sql}{end}\n"
    if kind == AccountType.ORACLE:
        script = (
            f"{{ {PRINT_CONNECT}; cat {body}printf '\\nEXIT\\n'; }} | {shlex.join(argv)}\n"
        )
    elif kind == AccountType.DB2:
        script = (
            f"{{ {PRINT_CONNECT}; cat {body}printf '\\nCONNECT RESET;\\nTERMINATE;\\n'; }}"
            f" | {shlex.join(argv)}\n"
        )
    elif kind == AccountType.POSTGRESQL:
        script = f"{shlex.join(argv)} <<'{end}'\n{PSQL_PREAMBLE}{sql}{end}\n"
    else:
        script = f'"${MYSQL_CLIENT_VAR}" {shlex.join(argv[1:])} {body}'
    return client_check(kind) + script, env


def sql_message(
    template: dict[str, Any],
    step: Row[Any],
    cipher: Cipher,
    values: dict[str, str] | None = None,
    host_set: Iterable[str] = (),
) -> dict[str, Any]:
    """The run message of an SQL step: a shell task feeding the SQL to the client, with
    ``${name}`` replaced by the values of the job's variables (when it has any).

    A value a host set (``host_set``) is not pasted into the SQL: it would be SQL of
    its own on every host; the message says why its hosts do not run it."""
    db = dict((step.config or {}).get("db") or {})
    if db.get("password"):
        db["password"] = cipher.decrypt(str(db["password"]))
    sql = loaded_script(step.script_content, step.config)
    refused = ""
    if values:
        untrusted = set(host_set)
        refused = host_value_refused(references(sql, untrusted), untrusted, ScriptLanguage.SQL)
        sql = render(sql, values)
    script, env = client_script(db, sql, int(template.get("timeout") or 0))
    return {
        **template,
        "lang": int(ScriptLanguage.SHELL),
        "script": script,
        "args": [],
        "env": {**template.get("env", {}), **env},
        REFUSED: refused,
    }
