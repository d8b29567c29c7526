"""A cron's name is held by one cron of its scope, by a unique index

The name was checked by reading before writing, so two saves at once (on one node or
two) could both find it free. Databases from before names were held may hold several
crons of one name in a scope, and those go on working: the oldest of each name is
indexed, the later ones are marked ``name_shared`` and left out of the index until
they are renamed. Nothing is renamed.

Revision ID: 0023_cron_name_unique
Revises: 0022_cron_firing_time
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023_cron_name_unique"
down_revision = "0022_cron_firing_time"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "crons",
        sa.Column("name_shared", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    crons = sa.table(
        "crons",
        sa.column("id", sa.BigInteger),
        sa.column("scope_type", sa.String),
        sa.column("scope_id", sa.String),
        sa.column("name", sa.String),
        sa.column("name_shared", sa.Boolean),
    )
    older = crons.alias("older")
    op.execute(
        sa.update(crons)
        .where(
            sa.exists().where(
                older.c.scope_type == crons.c.scope_type,
                older.c.scope_id == crons.c.scope_id,
                older.c.name == crons.c.name,
                older.c.id < crons.c.id,
            )
        )
        .values(name_shared=True)
    )
    op.create_index(
        "uq_crons_scope_name",
        "crons",
        ["scope_type", "scope_id", "name"],
        unique=True,
        sqlite_where=sa.text("NOT name_shared"),
        postgresql_where=sa.text("NOT name_shared"),
    )


def downgrade() -> None:
    op.drop_index("uq_crons_scope_name", table_name="crons")
    with op.batch_alter_table("crons") as batch:
        batch.drop_column("name_shared")
