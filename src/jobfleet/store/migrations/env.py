"""Alembic environment: always run from jobfleet with a connection handed in."""

from __future__ import annotations

from alembic import context

from jobfleet.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("jobfleet migrations run through jobfleet.store.Database.migrate()")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
