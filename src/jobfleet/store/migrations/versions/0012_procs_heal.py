"""GSE process operations and their per-host results; self-healing rules and decisions

Revision ID: 0012_procs_heal
Revises: 0011_people
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_procs_heal"
down_revision = "0011_people"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "proc_operations",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("biz_ids", sa.JSON(), nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("app_code", sa.String(128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_proc_operations")),
    )
    op.create_index(op.f("ix_proc_operations_create_time"), "proc_operations", ["create_time"])
    op.create_table(
        "proc_results",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("bk_host_id", sa.BigInteger(), nullable=False),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("op", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("error_msg", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proc_results")),
        sa.UniqueConstraint(
            "task_id",
            "bk_host_id",
            "namespace",
            "name",
            name=op.f("uq_proc_results_task_id_bk_host_id_namespace_name"),
        ),
    )
    op.create_index(op.f("ix_proc_results_task_id"), "proc_results", ["task_id"])
    op.create_table(
        "heal_rules",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("job_plan_id", sa.BigInteger(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("host_variable", sa.String(255), nullable=False),
        sa.Column("host_label", sa.String(255), nullable=False),
        sa.Column("host_kind", sa.String(16), nullable=False),
        sa.Column("max_hosts", sa.Integer(), nullable=False),
        sa.Column("rate_limit", sa.Integer(), nullable=False),
        sa.Column("host_rate_limit", sa.Integer(), nullable=False),
        sa.Column("rate_window", sa.Integer(), nullable=False),
        sa.Column("cooldown", sa.Integer(), nullable=False),
        sa.Column("host_cooldown", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("app_code", sa.String(128), nullable=False),
        sa.Column("creator", sa.String(128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heal_rules")),
        sa.UniqueConstraint("bk_biz_id", "name", name=op.f("uq_heal_rules_bk_biz_id_name")),
    )
    op.create_index(op.f("ix_heal_rules_bk_biz_id"), "heal_rules", ["bk_biz_id"])
    op.create_table(
        "heal_decisions",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.BigInteger(), nullable=False),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("alertname", sa.String(255), nullable=False),
        sa.Column("alert_status", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("hosts", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("job_instance_id", sa.BigInteger(), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heal_decisions")),
    )
    op.create_index(op.f("ix_heal_decisions_rule_id"), "heal_decisions", ["rule_id"])
    op.create_index(op.f("ix_heal_decisions_create_time"), "heal_decisions", ["create_time"])


def downgrade() -> None:
    op.drop_table("heal_decisions")
    op.drop_table("heal_rules")
    op.drop_table("proc_results")
    op.drop_table("proc_operations")
