"""topology whitelist rules notifications quotas

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dangerous_rules",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("expression", sa.String(length=1024), nullable=False),
        sa.Column("script_language_list", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("action", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dangerous_rules")),
    )
    op.create_table(
        "dynamic_groups",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dynamic_groups")),
        sa.UniqueConstraint("bk_biz_id", "name", name=op.f("uq_dynamic_groups_bk_biz_id_name")),
    )
    with op.batch_alter_table("dynamic_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dynamic_groups_bk_biz_id"), ["bk_biz_id"], unique=False
        )

    op.create_table(
        "host_modules",
        sa.Column("bk_host_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("module_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("bk_host_id", "module_id", name=op.f("pk_host_modules")),
    )
    with op.batch_alter_table("host_modules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_host_modules_module_id"), ["module_id"], unique=False)

    op.create_table(
        "host_whitelist",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_host_id", sa.BigInteger(), nullable=False),
        sa.Column("biz_ids", sa.JSON(), nullable=False),
        sa.Column("action_scopes", sa.JSON(), nullable=False),
        sa.Column("remark", sa.String(length=1024), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_whitelist")),
    )
    with op.batch_alter_table("host_whitelist", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_host_whitelist_bk_host_id"), ["bk_host_id"], unique=False
        )

    op.create_table(
        "notify_configs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("statuses", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("creator", sa.String(length=128), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("last_modify_user", sa.String(length=128), nullable=False),
        sa.Column("last_modify_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notify_configs")),
    )
    with op.batch_alter_table("notify_configs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_notify_configs_bk_biz_id"), ["bk_biz_id"], unique=False
        )

    op.create_table(
        "topo_nodes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bk_biz_id", sa.BigInteger(), nullable=False),
        sa.Column("node_type", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topo_nodes")),
        sa.UniqueConstraint(
            "bk_biz_id",
            "node_type",
            "parent_id",
            "name",
            name=op.f("uq_topo_nodes_bk_biz_id_node_type_parent_id_name"),
        ),
    )
    with op.batch_alter_table("topo_nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_topo_nodes_bk_biz_id"), ["bk_biz_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_topo_nodes_parent_id"), ["parent_id"], unique=False)

    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))

    with op.batch_alter_table("businesses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_running_jobs", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("businesses", schema=None) as batch_op:
        batch_op.drop_column("max_running_jobs")

    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("max_running_jobs")

    with op.batch_alter_table("topo_nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_topo_nodes_parent_id"))
        batch_op.drop_index(batch_op.f("ix_topo_nodes_bk_biz_id"))

    op.drop_table("topo_nodes")
    with op.batch_alter_table("notify_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notify_configs_bk_biz_id"))

    op.drop_table("notify_configs")
    with op.batch_alter_table("host_whitelist", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_whitelist_bk_host_id"))

    op.drop_table("host_whitelist")
    with op.batch_alter_table("host_modules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_modules_module_id"))

    op.drop_table("host_modules")
    with op.batch_alter_table("dynamic_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dynamic_groups_bk_biz_id"))

    op.drop_table("dynamic_groups")
    op.drop_table("dangerous_rules")
