"""scripts templates plans crons

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cron_firings",
        sa.Column("cron_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("slot", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("job_instance_id", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cron_id", "slot", name=op.f("pk_cron_firings")),
    )
    op.create_table(
        "crons",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("scope_type", sa.String(length=32), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("expression", sa.String(length=255), nullable=True),
        sa.Column("execute_time", sa.BigInteger(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=True),
        sa.Column("next_fire_at", sa.BigInteger(), nullable=True),
        sa.Column("last_fire_at", sa.BigInteger(), nullable=True),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("app_code", sa.String(length=128), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crons")),
    )
    with op.batch_alter_table("crons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crons_bk_biz_id"), ["bk_biz_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_crons_next_fire_at"), ["next_fire_at"], unique=False)

    op.create_table(
        "job_plans",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=False),
        sa.Column("template_version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_plans")),
        sa.UniqueConstraint("template_id", "name", name=op.f("uq_job_plans_template_id_name")),
    )
    with op.batch_alter_table("job_plans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_plans_bk_biz_id"), ["bk_biz_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_plans_template_id"), ["template_id"], unique=False)

    op.create_table(
        "job_templates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("next_step_id", sa.Integer(), nullable=False),
        sa.Column("next_variable_id", sa.Integer(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_templates")),
        sa.UniqueConstraint("bk_biz_id", "name", name=op.f("uq_job_templates_bk_biz_id_name")),
    )
    with op.batch_alter_table("job_templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_templates_bk_biz_id"), ["bk_biz_id"], unique=False)

    op.create_table(
        "script_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("script_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("version_desc", sa.String(length=4096), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_script_versions")),
        sa.UniqueConstraint(
            "script_id", "version", name=op.f("uq_script_versions_script_id_version")
        ),
    )
    with op.batch_alter_table("script_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_script_versions_script_id"), ["script_id"], unique=False
        )

    op.create_table(
        "scripts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=True),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("script_language", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scripts")),
    )
    with op.batch_alter_table("scripts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scripts_bk_biz_id"), ["bk_biz_id"], unique=False)

    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variables", sa.JSON(), nullable=True))

    with op.batch_alter_table("step_hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variables", sa.JSON(), nullable=True))

    with op.batch_alter_table("step_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variables", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("step_instances", schema=None) as batch_op:
        batch_op.drop_column("variables")

    with op.batch_alter_table("step_hosts", schema=None) as batch_op:
        batch_op.drop_column("variables")

    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.drop_column("variables")

    with op.batch_alter_table("scripts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scripts_bk_biz_id"))

    op.drop_table("scripts")
    with op.batch_alter_table("script_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_script_versions_script_id"))

    op.drop_table("script_versions")
    with op.batch_alter_table("job_templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_templates_bk_biz_id"))

    op.drop_table("job_templates")
    with op.batch_alter_table("job_plans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_plans_template_id"))
        batch_op.drop_index(batch_op.f("ix_job_plans_bk_biz_id"))

    op.drop_table("job_plans")
    with op.batch_alter_table("crons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_crons_next_fire_at"))
        batch_op.drop_index(batch_op.f("ix_crons_bk_biz_id"))

    op.drop_table("crons")
    op.drop_table("cron_firings")
