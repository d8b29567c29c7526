"""people: console passwords, console sessions, personal API tokens

Revision ID: 0011_people
Revises: 0010_db_accounts_credentials
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_people"
down_revision = "0010_db_accounts_credentials"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "passwords",
        sa.Column("username", sa.String(length=128), primary_key=True),
        sa.Column("hash", sa.String(length=255), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "console_sessions",
        sa.Column("id_hash", sa.String(length=128), primary_key=True),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_console_sessions_username", "console_sessions", ["username"], unique=False)
    op.create_table(
        "personal_tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(length=128), nullable=False, unique=True),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_personal_tokens_username", "personal_tokens", ["username"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_personal_tokens_username", table_name="personal_tokens")
    op.drop_table("personal_tokens")
    op.drop_index("ix_console_sessions_username", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("passwords")
