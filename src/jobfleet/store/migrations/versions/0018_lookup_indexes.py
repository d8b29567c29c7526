"""Crons found by their plan, and a rule's last started decision per alert, by index

Syncing or deleting a plan looks up the crons that launch it, and every alert a rule
decides on looks up the last job it started for that alert's fingerprint: without an
index both read the whole table, so each grew with the number of crons or decisions.

Revision ID: 0018_lookup_indexes
Revises: 0017_file_log_index
"""

from __future__ import annotations

from alembic import op

revision = "0018_lookup_indexes"
down_revision = "0017_file_log_index"
branch_labels = None
depends_on = None

CRONS = "ix_crons_plan_id"
DECISIONS = "ix_heal_decisions_rule_id_decision_fingerprint_id"


def upgrade() -> None:
    with op.batch_alter_table("crons", schema=None) as batch_op:
        batch_op.create_index(CRONS, ["plan_id"], unique=False)
    with op.batch_alter_table("heal_decisions", schema=None) as batch_op:
        batch_op.create_index(
            DECISIONS, ["rule_id", "decision", "fingerprint", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("heal_decisions", schema=None) as batch_op:
        batch_op.drop_index(DECISIONS)
    with op.batch_alter_table("crons", schema=None) as batch_op:
        batch_op.drop_index(CRONS)
