"""Connect values as sqlplus and the DB2 command line processor take them."""

from __future__ import annotations

from jobfleet.domain.db_connect import (
    connect_problem,
    db2_connect,
    db2_quote,
    oracle_connect,
    oracle_user,
)
from jobfleet.domain.status import AccountType

ALL = (AccountType.MYSQL, AccountType.ORACLE, AccountType.DB2, AccountType.POSTGRESQL)


def _problem(kind: int, **change: str) -> str | None:
    values = {"user": "scott", "password": "pw", "name": "ORCL", "host": "db.example", **change}
    problem = connect_problem(kind, **values)
    return None if problem is None else problem.message


def test_control_characters_are_refused_for_every_type() -> None:
    for kind in ALL:
        assert _problem(kind) is None
        for field, key in (("name", "db_name"), ("user", "account"), ("host", "db_host")):
            for char in "\n\r\t\x00\x1b\x7f\x85":
                message = _problem(kind, **{field: f"a{char}b"})
                assert message is not None and f"[{key}]" in message, (kind, field, char)
                assert "control characters" in message


def test_passwords_per_type() -> None:
    # mysql and psql get the password in the environment: any character is kept
    assert _problem(AccountType.MYSQL, password='a"b\nc') is None
    assert _problem(AccountType.POSTGRESQL, password="a\nb") is None
    assert "[db_password]" in (_problem(AccountType.ORACLE, password='a"b') or "")
    assert "[account]" in (_problem(AccountType.ORACLE, user='a"b') or "")
    assert "[db_password]" in (_problem(AccountType.DB2, password="a\nb") or "")
    assert _problem(AccountType.DB2, password="a'b\" c;d%s$\\") is None
    assert _problem(AccountType.ORACLE, password="a'b c;d%s$\\&") is None


def test_database_names_per_client() -> None:
    assert _problem(AccountType.ORACLE, name="pdb-1.example.com") is None
    # a "-" ending the CONNECT line would continue it onto the next
    assert "[db_name]" in (_problem(AccountType.ORACLE, name="pdb-") or "")
    assert "[db_name]" in (_problem(AccountType.ORACLE, name="a b") or "")
    assert "[db_name]" in (_problem(AccountType.ORACLE, name="a/b@c") or "")
    assert _problem(AccountType.DB2, name="SAMPLE#1") is None
    assert "[db_name]" in (_problem(AccountType.DB2, name="S;x") or "")
    assert _problem(AccountType.ORACLE, name="") is None


def test_connect_lines() -> None:
    assert db2_quote("o'k") == "'o''k'"
    assert db2_connect("S", "u", "p q;'") == "CONNECT TO S USER 'u' USING 'p q;''';\n"
    lines = oracle_connect("u", "p'%s", "@//h:1521/s").splitlines()
    assert lines[2:] == ["SET DEFINE OFF", 'CONNECT u/"p\'%s"@//h:1521/s', "SET DEFINE ON"]


def test_an_oracle_user_is_written_as_sqlplus_takes_it() -> None:
    # a user made without quotes is stored in upper case: a plain name must reach Oracle
    # unquoted, so that ``scott`` logs in as SCOTT
    assert oracle_user("scott") == "scott"
    assert oracle_user("App_1$#") == "App_1$#"
    # anything Oracle would not take unquoted keeps its exact case and characters
    for name in ("app-user", "1app", "_app", "a b", "ap%sp", "süß", "app;drop"):
        assert oracle_user(name) == f'"{name}"'
    assert oracle_connect("scott", "t", "").splitlines()[3] == 'CONNECT scott/"t"'
