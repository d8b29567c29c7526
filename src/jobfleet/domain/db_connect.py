"""Database connection values as each client's own syntax takes them.

``sqlplus`` (Oracle) and the DB2 command line processor read their connect statement as
a line of text, so a user, password or database name is written into that line quoted
as the client requires, and a value the client cannot express is refused when the
account is made (and again when a step is built, for an account made before the check).
A control character (newline, carriage return, NUL, ...) would end the line and start
another command, so none is accepted in any database account's host, database name or
user, nor in an Oracle or DB2 password.
"""

from __future__ import annotations

import re

from jobfleet.domain.errors import JobError
from jobfleet.domain.status import AccountType

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NO_CONTROL = "must not contain control characters (newline, carriage return, tab, NUL, ...)"
# an Oracle Net service name and a DB2 database alias, as their clients take them unquoted;
# the service name ends the CONNECT line, where SQL*Plus reads a "-" as "continued"
ORACLE_SERVICE = re.compile(r"[A-Za-z0-9_.$#-]*[A-Za-z0-9_.$#]")
DB2_ALIAS = re.compile(r"[A-Za-z0-9_@#$]+")
# an Oracle nonquoted identifier: Oracle folds it to upper case, as it did when the user
# was created without quotes (the usual way), so it is written as typed
ORACLE_PLAIN_USER = re.compile(r"[A-Za-z][A-Za-z0-9_$#]*")
# the fields of create_account / update_account each value comes from
FIELDS = {"user": "account", "password": "db_password", "name": "db_name", "host": "db_host"}


def connect_problem(
    kind: int, *, user: str, password: str | None, name: str | None, host: str | None
) -> JobError | None:
    """Why the account's values cannot be written into its client's connect statement."""
    values = {"user": user, "name": name or "", "host": host or ""}
    if kind in (AccountType.ORACLE, AccountType.DB2):
        values["password"] = password or ""
    for key, value in values.items():
        if CONTROL.search(value):
            return JobError.invalid(FIELDS[key], NO_CONTROL)
    if kind == AccountType.ORACLE:
        for key in ("user", "password"):
            if '"' in values[key]:
                return JobError.invalid(
                    FIELDS[key], 'an Oracle user or password cannot contain a double quote (")'
                )
        if values["name"] and not ORACLE_SERVICE.fullmatch(values["name"]):
            return JobError.invalid(
                "db_name",
                "an Oracle service name: letters, digits and _ . $ # - (not ending with -)",
            )
    if kind == AccountType.DB2 and values["name"] and not DB2_ALIAS.fullmatch(values["name"]):
        return JobError.invalid("db_name", "a DB2 database alias: letters, digits and _ @ # $")
    return None


def check_connect(
    kind: int, *, user: str, password: str | None, name: str | None, host: str | None
) -> None:
    """Refuse, with the invalid parameter envelope, what ``connect_problem`` finds."""
    problem = connect_problem(kind, user=user, password=password, name=name, host=host)
    if problem is not None:
        raise problem


def oracle_user(user: str) -> str:
    """The user as ``sqlplus scott/...`` takes it: a plain name as typed, which Oracle
    folds to upper case (``scott`` is the user ``SCOTT`` made without quotes); any other
    name quoted, its case kept (a user made as ``"app-user"``)."""
    return user if ORACLE_PLAIN_USER.fullmatch(user) else f'"{user}"'


def oracle_connect(user: str, password: str, target: str) -> str:
    """SQL*Plus's connect lines: the user as :func:`oracle_user` writes it, the password
    quoted (Oracle allows no ``"`` in either), substitution off so that ``&`` stays a
    character, then back on for the step's own SQL; ``target`` is
    ``@//host:port/service`` or empty."""
    return (
        "WHENEVER SQLERROR EXIT FAILURE\nWHENEVER OSERROR EXIT FAILURE\nSET DEFINE OFF\n"
        f'CONNECT {oracle_user(user)}/"{password}"{target}\nSET DEFINE ON\n'
    )


def db2_quote(value: str) -> str:
    """A DB2 CLP string: in single quotes, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def db2_connect(name: str, user: str, password: str) -> str:
    """The DB2 CLP connect statement, user and password quoted as CLP strings."""
    return f"CONNECT TO {name} USER {db2_quote(user)} USING {db2_quote(password)};\n"
