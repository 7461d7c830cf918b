"""The first schema: tokens, instances, units, operations, events, subscribers.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOT_DISPOSED = sa.text("state <> 'disposed'")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("tenant", sa.String(255), nullable=False, index=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("driver", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("block", sa.Integer, nullable=False),
        sa.Column("sizes", sa.JSON, nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("stack_state", sa.String(32), nullable=False),
        sa.Column("provisioned", sa.Boolean, nullable=False),
        sa.Column("test_subscribers", sa.Boolean, nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("current_operation_id", sa.String(36)),
        sa.Column("failed_operation_id", sa.String(36)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index(
        "uq_instances_tenant_name_live",
        "instances",
        ["tenant", "name"],
        unique=True,
        sqlite_where=NOT_DISPOSED,
        postgresql_where=NOT_DISPOSED,
    )
    op.create_index(
        "uq_instances_block_live",
        "instances",
        ["block"],
        unique=True,
        sqlite_where=NOT_DISPOSED,
        postgresql_where=NOT_DISPOSED,
    )
    op.create_table(
        "units",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("instance_id", sa.String(36), sa.ForeignKey("instances.id"), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("address", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer),
        sa.Column("started_at", sa.Float),
        sa.Column("detail", sa.Text, nullable=False),
        sa.UniqueConstraint("instance_id", "name", name="uq_units_instance_name"),
    )
    op.create_table(
        "operations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("instance_id", sa.String(36), sa.ForeignKey("instances.id"), nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False, index=True),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("error", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(36), sa.ForeignKey("instances.id"), nullable=False, index=True),
        sa.Column("time", TS, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "subscribers",
        sa.Column("instance_id", sa.String(36), sa.ForeignKey("instances.id"), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("domain", sa.String(255), primary_key=True),
        sa.Column("password", sa.String(255), nullable=False),
    )


def downgrade() -> None:
    for table in ("subscribers", "events", "operations", "units", "instances", "tokens"):
        op.drop_table(table)
