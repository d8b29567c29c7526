"""file logs

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("step_instance_id", sa.BigInteger(), nullable=False),
        sa.Column("execute_count", sa.Integer(), nullable=False),
        sa.Column("bk_host_id", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("src_host_id", sa.BigInteger(), nullable=True),
        sa.Column("src_ip", sa.String(length=64), nullable=True),
        sa.Column("src_cloud_id", sa.BigInteger(), nullable=True),
        sa.Column("src_path", sa.String(length=4096), nullable=False),
        sa.Column("dest_path", sa.String(length=4096), nullable=True),
        sa.Column("blob_id", sa.String(length=64), nullable=True),
        sa.Column("is_dir", sa.Boolean(), nullable=False),
        sa.Column("file_mode", sa.Integer(), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("speed", sa.Float(), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("log_content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_logs")),
    )
    with op.batch_alter_table("file_logs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_file_logs_step_instance_id_execute_count_bk_host_id"),
            ["step_instance_id", "execute_count", "bk_host_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("file_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_file_logs_step_instance_id_execute_count_bk_host_id"))

    op.drop_table("file_logs")
