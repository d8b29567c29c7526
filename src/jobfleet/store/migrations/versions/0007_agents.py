"""one live credential per host; when a credential was revoked

Revision ID: 0007_agents
Revises: 0006_access
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_agents"
down_revision = "0006_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("revoked_at", sa.BigInteger(), nullable=True))
    op.create_index(op.f("ix_agents_revoked_at"), "agents", ["revoked_at"], unique=False)
    # older releases could leave two live credentials on one host: keep the newest
    op.execute(
        """
        UPDATE agents SET revoked = true
        WHERE revoked = false AND EXISTS (
            SELECT 1 FROM agents newer
            WHERE newer.bk_host_id = agents.bk_host_id AND newer.revoked = false
              AND (newer.create_time > agents.create_time
                   OR (newer.create_time = agents.create_time
                       AND newer.agent_id > agents.agent_id))
        )
        """
    )
    op.create_index(
        "uq_agents_live_host",
        "agents",
        ["bk_host_id"],
        unique=True,
        sqlite_where=sa.text("revoked = 0"),
        postgresql_where=sa.text("revoked = false"),
    )


def downgrade() -> None:
    op.drop_index("uq_agents_live_host", table_name="agents")
    op.drop_index(op.f("ix_agents_revoked_at"), table_name="agents")
    op.drop_column("agents", "revoked_at")
