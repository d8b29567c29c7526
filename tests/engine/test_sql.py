"""The run message of an SQL step: the client's argv never holds the password."""

from __future__ import annotations

from types import SimpleNamespace

from cryptography.fernet import Fernet

from jobfleet.domain.status import AccountType
from jobfleet.engine.sql import client_command, sql_message
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
    first, *body = message["script"].splitlines()
    end = first.rsplit("<<'", 1)[1].rstrip("'")
    assert body == ["SELECT 1;", "JOBFLEET_SQL_x", end]
