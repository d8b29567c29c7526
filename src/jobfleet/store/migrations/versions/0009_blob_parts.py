"""blob_parts: a blob's bytes in the database, for nodes that share no disk

Revision ID: 0009_blob_parts
Revises: 0008_host
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_blob_parts"
down_revision = "0008_host"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_parts",
        sa.Column("blob_id", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "token", "n"),
    )
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parts_token", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_column("parts_token")
    op.drop_table("blob_parts")
