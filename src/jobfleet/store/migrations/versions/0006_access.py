"""app restrictions and retention indexes

Revision ID: 0006_access
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_access"
down_revision = "0005"
branch_labels = None
depends_on = None

BOOTSTRAP_APP = "jobfleet"


def upgrade() -> None:
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("allowed_users", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("allowed_biz", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # existing apps stay unrestricted; only the bootstrap app administers the server
    apps = sa.table("apps", sa.column("app_code", sa.String), sa.column("is_admin", sa.Boolean))
    op.execute(apps.update().where(apps.c.app_code == BOOTSTRAP_APP).values(is_admin=True))
    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_instances_create_time"), ["create_time"], unique=False
        )
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blobs_create_time"), ["create_time"], unique=False)
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_job_instance_id"), ["job_instance_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_job_instance_id"))
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_create_time"))
    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_instances_create_time"))
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("is_admin")
        batch_op.drop_column("allowed_biz")
        batch_op.drop_column("allowed_users")
