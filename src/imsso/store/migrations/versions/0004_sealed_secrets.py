"""Subscribers' secrets at rest: sealed with the key file's key, a password kept as HA1 only where the
profile checks digest against HA1 (sip-core). Rows stored before are converted here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import context, op

from imsso.model import Subscriber
from imsso.store import credentials_of, sealed_secrets
from imsso.vault import VaultError

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SECRETS = ("password", "k", "opc", "ha1", "ha1b")


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.alter_column(
            "k", type_=sa.String(255), existing_type=sa.String(32), existing_nullable=False, existing_server_default=""
        )
        batch.alter_column(
            "opc",
            type_=sa.String(255),
            existing_type=sa.String(32),
            existing_nullable=False,
            existing_server_default="",
        )
        batch.add_column(sa.Column("ha1", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("ha1b", sa.String(255), nullable=False, server_default=""))
    _seal_existing()


def _seal_existing() -> None:
    bind = op.get_bind()
    subscribers = sa.table("subscribers", *(sa.column(c) for c in ("instance_id", "user", "domain", *SECRETS)))
    instances = sa.table("instances", sa.column("id"), sa.column("profile"))
    rows = bind.execute(
        sa.select(subscribers, instances.c.profile).join(instances, instances.c.id == subscribers.c.instance_id)
    ).all()
    if not rows:
        return
    vault = context.config.attributes.get("vault")
    if vault is None:
        raise VaultError(
            "migration 0004 seals the subscribers' secrets and needs the key file: run it "
            "through `imsso serve` (or Store.migrate), which knows IMSSO_SECRETS_KEY_FILE"
        )
    for r in rows:
        sub = Subscriber(r.instance_id, r.user, r.domain, r.password, r.k, r.opc)
        values = sealed_secrets(vault, sub, credentials_of(r.profile))
        bind.execute(
            subscribers.update()
            .where(
                subscribers.c.instance_id == r.instance_id,
                subscribers.c.user == r.user,
                subscribers.c.domain == r.domain,
            )
            .values(**values)
        )


def downgrade() -> None:
    # HA1 cannot give the password back: going down opens what can be opened and drops HA1.
    vault = context.config.attributes.get("vault")
    bind = op.get_bind()
    subscribers = sa.table("subscribers", *(sa.column(c) for c in ("instance_id", "user", "domain", *SECRETS)))
    for r in bind.execute(sa.select(subscribers)).all():
        if vault is None:
            raise VaultError("downgrading 0004 needs the secrets key file (Store.migrate knows it)")
        bind.execute(
            subscribers.update()
            .where(
                subscribers.c.instance_id == r.instance_id,
                subscribers.c.user == r.user,
                subscribers.c.domain == r.domain,
            )
            .values(password=vault.open(r.password), k=vault.open(r.k), opc=vault.open(r.opc))
        )
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("ha1b")
        batch.drop_column("ha1")
        batch.alter_column("opc", type_=sa.String(32), existing_type=sa.String(255))
        batch.alter_column("k", type_=sa.String(32), existing_type=sa.String(255))
