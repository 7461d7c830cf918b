"""The database schema. Alembic migrations in migrations/ create and change it; keep both in step."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict: sa.JSON, list: sa.JSON, dt.datetime: sa.DateTime(timezone=True)}


NOT_DISPOSED = sa.text("state <> 'disposed'")


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    tenant: Mapped[str] = mapped_column(sa.String(255), index=True)
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]


class InstanceRow(Base):
    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str] = mapped_column(sa.String(255))
    profile: Mapped[str] = mapped_column(sa.String(64))
    driver: Mapped[str] = mapped_column(sa.String(32))
    domain: Mapped[str] = mapped_column(sa.String(255))
    block: Mapped[int]
    sizes: Mapped[dict]
    attributes: Mapped[dict]
    state: Mapped[str] = mapped_column(sa.String(32))
    stack_state: Mapped[str] = mapped_column(sa.String(32))
    provisioned: Mapped[bool]
    test_subscribers: Mapped[bool]
    secret: Mapped[str] = mapped_column(sa.String(64))
    stack_id: Mapped[str] = mapped_column(sa.String(64), server_default="")
    outputs: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)
    current_operation_id: Mapped[str | None] = mapped_column(sa.String(36))
    failed_operation_id: Mapped[str | None] = mapped_column(sa.String(36))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    __table_args__ = (
        # One live instance per name and tenant, one live instance per address block;
        # disposed ones stay as history.
        sa.Index(
            "uq_instances_tenant_name_live",
            "tenant",
            "name",
            unique=True,
            sqlite_where=NOT_DISPOSED,
            postgresql_where=NOT_DISPOSED,
        ),
        sa.Index(
            "uq_instances_block_live", "block", unique=True, sqlite_where=NOT_DISPOSED, postgresql_where=NOT_DISPOSED
        ),
    )


class UnitRow(Base):
    __tablename__ = "units"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    instance_id: Mapped[str] = mapped_column(sa.ForeignKey("instances.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(64))
    role: Mapped[str] = mapped_column(sa.String(32))
    idx: Mapped[int]
    address: Mapped[str] = mapped_column(sa.String(64), unique=True)
    state: Mapped[str] = mapped_column(sa.String(32))
    pid: Mapped[int | None]
    started_at: Mapped[float | None]
    detail: Mapped[str] = mapped_column(sa.Text, default="")

    __table_args__ = (sa.UniqueConstraint("instance_id", "name", name="uq_units_instance_name"),)


class OperationRow(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    instance_id: Mapped[str] = mapped_column(sa.ForeignKey("instances.id"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    params: Mapped[dict]
    state: Mapped[str] = mapped_column(sa.String(32), index=True)
    steps: Mapped[list]
    error: Mapped[dict | None] = mapped_column(sa.JSON)
    attempts: Mapped[int]
    created_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(sa.ForeignKey("instances.id"), index=True)
    time: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(sa.String(32))
    message: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict]


class SubscriberRow(Base):
    """Secrets are never in clear here: password, ha1, ha1b, k and opc hold Fernet tokens sealed with
    the key file's primary key (imsso.vault), or "" when the subscriber has none of that kind."""

    __tablename__ = "subscribers"
    instance_id: Mapped[str] = mapped_column(sa.ForeignKey("instances.id"), primary_key=True)
    user: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    domain: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    password: Mapped[str] = mapped_column(sa.String(255))  # sealed; only where the profile needs it
    k: Mapped[str] = mapped_column(sa.String(255), server_default="")
    opc: Mapped[str] = mapped_column(sa.String(255), server_default="")
    amf: Mapped[str] = mapped_column(sa.String(4), server_default="8000")
    ha1: Mapped[str] = mapped_column(sa.String(255), server_default="")
    ha1b: Mapped[str] = mapped_column(sa.String(255), server_default="")

    SECRETS = ("password", "k", "opc", "ha1", "ha1b")
