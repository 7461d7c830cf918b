"""Subscribers may authenticate with AKA: the USIM's K, the operator's OPc, the vectors' AMF.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("k", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("opc", sa.String(32), nullable=False, server_default=""))
        batch.add_column(sa.Column("amf", sa.String(4), nullable=False, server_default="8000"))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("amf")
        batch.drop_column("opc")
        batch.drop_column("k")
