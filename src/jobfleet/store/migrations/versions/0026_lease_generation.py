"""A job's lease carries a generation, bumped by every claim

The owner's node id alone did not tell two drivers of one job on one node apart: a
driver whose lease lapsed or was given up, still running when the same node claimed
the job again, passed the owner check. Writes of a job's driver are fenced on the
node and the generation of its claim (``store/leases.py``).

Revision ID: 0026_lease_generation
Revises: 0025_key_checks
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026_lease_generation"
down_revision = "0025_key_checks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("lease_gen", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.drop_column("lease_gen")
