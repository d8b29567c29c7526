"""database accounts (host, port, database, system account); credentials; file sources

Revision ID: 0010_db_accounts_credentials
Revises: 0009_blob_parts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_db_accounts_credentials"
down_revision = "0009_blob_parts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("db_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("db_port", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("db_name", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("db_system_account_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
    )
    op.create_index(op.f("ix_credentials_bk_biz_id"), "credentials", ["bk_biz_id"], unique=False)
    op.create_table(
        "file_sources",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(length=128), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("access_params", sa.JSON(), nullable=False),
        sa.Column("credential_id", sa.String(length=32), nullable=False),
        sa.Column("file_prefix", sa.String(length=255), nullable=False),
        sa.Column("enable", sa.Boolean(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_sources")),
        sa.UniqueConstraint("bk_biz_id", "code", name=op.f("uq_file_sources_bk_biz_id_code")),
    )


def downgrade() -> None:
    op.drop_table("file_sources")
    op.drop_index(op.f("ix_credentials_bk_biz_id"), table_name="credentials")
    op.drop_table("credentials")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("db_system_account_id")
        batch_op.drop_column("db_name")
        batch_op.drop_column("db_port")
        batch_op.drop_column("db_host")
