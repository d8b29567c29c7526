"""The database is the authority on the keys its servers must hold.

Secrets in the database (callback URLs, passwords, credentials, sensitive values) are
sealed with the server's secret key, and agents pin the agent CA: a server with another
key would seal values no other server can open and fail on every stored one, one by one,
and one with another CA is refused by every agent. The first server on a database writes
the check values of its keys (insert-if-absent: of servers starting together, one wins);
every server compares its own with them at start, before it serves or writes anything.

A database from before these values were kept has none: the key of the first server that
starts on it is adopted only if it opens a sealed value stored there (when there is one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Connection, inspect, select
from sqlalchemy.dialects import postgresql, sqlite

from jobfleet.store.database import Database, now_ms
from jobfleet.store.secrets import PREFIX
from jobfleet.store.tables import (
    accounts,
    credentials,
    heal_rules,
    job_instances,
    key_checks,
    notify_configs,
    outbox,
)

KEY_FILE = "secret.key"
AGENT_CA = "tls/ca.pem"

# the text columns that hold values sealed with the secret key; the small tables first,
# so that one sealed value is usually found without reading the job history
SEALED_COLUMNS: tuple[Column[str], ...] = (
    accounts.c.password,
    credentials.c.secret,
    notify_configs.c.secret,
    heal_rules.c.secret,
    outbox.c.target,
    job_instances.c.callback_url,
)


@dataclass(frozen=True)
class KeysRefused:
    """This server's keys are not the database's: ``names`` of the differing ones;
    ``sealed``: no values were stored yet, and the stored secrets do not open with
    this server's secret key."""

    names: list[str]
    sealed: bool = False


class KeyChecks:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def stored(self) -> dict[str, str]:
        async with self.db.connect() as conn:
            rows = await conn.execute(select(key_checks.c.name, key_checks.c.value))
            return {r.name: r.value for r in rows}

    async def refused(
        self, values: dict[str, str], opens: Callable[[str], bool]
    ) -> KeysRefused | None:
        """What ``settle`` would refuse, told without a write and whatever the schema's
        revision: run before an upgrade, so that a server the database refuses leaves it
        as it found it. A database with values compares with them; one from before they
        were kept (no table) is compared by a sealed value it holds, if any; an empty
        one refuses nothing."""
        async with self.db.connect() as conn:
            kept = await conn.run_sync(lambda c: inspect(c).has_table(key_checks.name))
        stored = await self.stored() if kept else {}
        differing = [n for n, v in values.items() if n in stored and stored[n] != v]
        if differing:
            return KeysRefused(differing)
        if KEY_FILE in values and KEY_FILE not in stored:
            sealed = await self._one_sealed()
            if sealed is not None and not opens(sealed):
                return KeysRefused([KEY_FILE], sealed=True)
        return None

    async def settle(
        self, values: dict[str, str], opens: Callable[[str], bool]
    ) -> KeysRefused | None:
        """Compares ``values`` (name → check value) with the database's and writes the
        ones it lacks; writes nothing when any differs. ``opens`` tells whether this
        server's key opens a sealed value."""
        stored = await self.stored()
        differing = [n for n, v in values.items() if n in stored and stored[n] != v]
        if differing:
            return KeysRefused(differing)
        missing = {n: v for n, v in values.items() if n not in stored}
        if not missing:
            return None
        if KEY_FILE in missing:
            sealed = await self._one_sealed()
            if sealed is not None and not opens(sealed):
                return KeysRefused([KEY_FILE], sealed=True)
        dialect = sqlite if self.db.is_sqlite else postgresql
        now = now_ms()
        async with self.db.begin() as conn:
            await conn.execute(
                dialect.insert(key_checks)
                .values([{"name": n, "value": v, "create_time": now} for n, v in missing.items()])
                .on_conflict_do_nothing()
            )
        # another server may have written first: its values are the database's
        stored = await self.stored()
        differing = [n for n, v in values.items() if stored.get(n) != v]
        return KeysRefused(differing) if differing else None

    async def _one_sealed(self) -> str | None:
        async with self.db.connect() as conn:
            # an older schema lacks some of them (the tables and columns of later
            # migrations): only those it has are read
            present = await conn.run_sync(_present_columns)
            for column in SEALED_COLUMNS:
                if (column.table.name, column.name) not in present:
                    continue
                value = (
                    await conn.execute(
                        select(column).where(column.like(f"{PREFIX}%")).limit(1)
                    )
                ).scalar()
                if value is not None:
                    return str(value)
        return None


def _present_columns(conn: Connection) -> set[tuple[str, str]]:
    found = inspect(conn)
    tables = set(found.get_table_names())
    return {
        (column.table.name, column.name)
        for column in SEALED_COLUMNS
        if column.table.name in tables
        and column.name in {c["name"] for c in found.get_columns(column.table.name)}
    }
