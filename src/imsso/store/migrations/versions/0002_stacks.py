"""Instances remember the stack that holds them and the outputs their driver reported.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("stack_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("outputs", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("outputs")
        batch.drop_column("stack_id")
