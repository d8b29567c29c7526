"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("category", sa.Integer(), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("os", sa.String(length=32), nullable=False),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("bk_biz_id", "alias", name=op.f("uq_accounts_bk_biz_id_alias")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_bk_biz_id"), ["bk_biz_id"], unique=False)

    op.create_table(
        "agents",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("bk_host_id", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agents")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agents_bk_host_id"), ["bk_host_id"], unique=False)

    op.create_table(
        "apps",
        sa.Column("app_code", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_code", name=op.f("pk_apps")),
    )
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("app_code", sa.String(length=128), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("scope_type", sa.String(length=32), nullable=True),
        sa.Column("scope_id", sa.String(length=64), nullable=True),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_create_time"), ["create_time"], unique=False)

    op.create_table(
        "biz_sets",
        sa.Column("bk_biz_set_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("biz_ids", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bk_biz_set_id", name=op.f("pk_biz_sets")),
    )
    op.create_table(
        "businesses",
        sa.Column("bk_biz_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bk_biz_id", name=op.f("pk_businesses")),
    )
    op.create_table(
        "enroll_tokens",
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=True),
        sa.Column("uses_left", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_enroll_tokens")),
    )
    op.create_table(
        "grants",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("scope_type", sa.String(length=32), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.UniqueConstraint(
            "username",
            "scope_type",
            "scope_id",
            name=op.f("uq_grants_username_scope_type_scope_id"),
        ),
    )
    op.create_table(
        "hosts",
        sa.Column(
            "bk_host_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("bk_cloud_id", sa.BigInteger(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("ipv6", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("os_type", sa.String(length=32), nullable=False),
        sa.Column("os_name", sa.String(length=255), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("alive", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("last_seen", sa.BigInteger(), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bk_host_id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("bk_cloud_id", "ip", name=op.f("uq_hosts_bk_cloud_id_ip")),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hosts_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_hosts_bk_biz_id"), ["bk_biz_id"], unique=False)

    op.create_table(
        "job_instances",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("scope_type", sa.String(length=32), nullable=False),
        sa.Column("scope_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("launch_mode", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("app_code", sa.String(length=128), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.BigInteger(), nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=False),
        sa.Column("cron_id", sa.BigInteger(), nullable=True),
        sa.Column("callback_url", sa.String(length=1024), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=True),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("total_time", sa.BigInteger(), nullable=True),
        sa.Column("owner_node", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_instances")),
    )
    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_job_instances_scope_type_scope_id_create_time"),
            ["scope_type", "scope_id", "create_time"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_job_instances_status"), ["status"], unique=False)

    op.create_table(
        "log_chunks",
        sa.Column("step_instance_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("execute_count", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bk_host_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "step_instance_id", "execute_count", "bk_host_id", "seq", name=op.f("pk_log_chunks")
        ),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("job_instance_id", sa.BigInteger(), nullable=True),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.String(length=1024), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("done_time", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_outbox_next_attempt_at"), ["next_attempt_at"], unique=False
        )

    op.create_table(
        "step_hosts",
        sa.Column("step_instance_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("execute_count", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bk_host_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("bk_cloud_id", sa.BigInteger(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("ipv6", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=True),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("total_time", sa.BigInteger(), nullable=True),
        sa.Column("log_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "step_instance_id", "execute_count", "bk_host_id", name=op.f("pk_step_hosts")
        ),
    )
    op.create_table(
        "step_instances",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("job_instance_id", sa.BigInteger(), nullable=False),
        sa.Column("step_order", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("type", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("execute_count", sa.Integer(), nullable=False),
        sa.Column("ignore_error", sa.Boolean(), nullable=False),
        sa.Column("timeout", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=True),
        sa.Column("account_alias", sa.String(length=255), nullable=True),
        sa.Column("account_name", sa.String(length=255), nullable=True),
        sa.Column("script_language", sa.Integer(), nullable=True),
        sa.Column("script_content", sa.Text(), nullable=True),
        sa.Column("script_param", sa.Text(), nullable=True),
        sa.Column("is_param_sensitive", sa.Boolean(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=True),
        sa.Column("rolling_config", sa.JSON(), nullable=True),
        sa.Column("batch_count", sa.Integer(), nullable=False),
        sa.Column("current_batch", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=True),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("total_time", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_instances")),
    )
    with op.batch_alter_table("step_instances", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_step_instances_job_instance_id"), ["job_instance_id"], unique=False
        )

    op.create_table(
        "users",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_users")),
    )


def downgrade() -> None:
    op.drop_table("users")
    with op.batch_alter_table("step_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_instances_job_instance_id"))

    op.drop_table("step_instances")
    op.drop_table("step_hosts")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_next_attempt_at"))

    op.drop_table("outbox")
    op.drop_table("log_chunks")
    with op.batch_alter_table("job_instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_instances_status"))
        batch_op.drop_index(batch_op.f("ix_job_instances_scope_type_scope_id_create_time"))

    op.drop_table("job_instances")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_bk_biz_id"))
        batch_op.drop_index(batch_op.f("ix_hosts_agent_id"))

    op.drop_table("hosts")
    op.drop_table("grants")
    op.drop_table("enroll_tokens")
    op.drop_table("businesses")
    op.drop_table("biz_sets")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_create_time"))

    op.drop_table("audit_log")
    op.drop_table("apps")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_bk_host_id"))

    op.drop_table("agents")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_bk_biz_id"))

    op.drop_table("accounts")
