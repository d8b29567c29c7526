"""Tags on scripts

Revision ID: 0014_web_catalog
Revises: 0013_bk_gse2
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_web_catalog"
down_revision = "0013_bk_gse2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.add_column(sa.Column("tags", sa.String(512), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("scripts") as batch:
        batch.drop_column("tags")
