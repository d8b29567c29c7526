"""Fixtures for the whole suite: a fresh database per test on every configured backend.

``JOBFLEET_TEST_BACKENDS`` is a comma-separated list of ``sqlite`` and ``postgresql``
(default ``sqlite``); ``postgresql`` needs ``JOBFLEET_TEST_PG_URL``, the SQLAlchemy URL of
a superuser on a server the suite may create and drop databases on. ``make test`` sets
both up.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

KNOWN_BACKENDS = ("sqlite", "postgresql")
BACKENDS = tuple(
    name.strip()
    for name in os.environ.get("JOBFLEET_TEST_BACKENDS", "sqlite").split(",")
    if name.strip()
)


def pytest_configure(config: pytest.Config) -> None:
    # A misconfigured run must fail, not quietly test less than it claims to.
    unknown = set(BACKENDS) - set(KNOWN_BACKENDS)
    if unknown or not BACKENDS:
        raise pytest.UsageError(
            f"JOBFLEET_TEST_BACKENDS={','.join(BACKENDS)!r}: choose from {KNOWN_BACKENDS}"
        )
    if "postgresql" in BACKENDS and not os.environ.get("JOBFLEET_TEST_PG_URL"):
        raise pytest.UsageError("the postgresql backend needs JOBFLEET_TEST_PG_URL")


def pytest_report_header() -> str:
    return f"jobfleet database backends: {', '.join(BACKENDS)}"


@asynccontextmanager
async def fresh_database(backend: str, tmp_dir: Path) -> AsyncIterator[str]:
    """An empty database on ``backend`` for as long as the context lasts; yields its URL.

    Fixtures of a wider scope than ``database_url`` build on this.
    """
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_dir / 'jobfleet.db'}"
        return
    admin = make_url(os.environ["JOBFLEET_TEST_PG_URL"])
    name = f"jf_{secrets.token_hex(6)}"
    # asyncpg takes a plain libpq-style DSN, without SQLAlchemy's driver suffix
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            # FORCE: a test that leaks a connection must not leak its database too
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """SQLAlchemy URL of an empty database, once per configured backend."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url
