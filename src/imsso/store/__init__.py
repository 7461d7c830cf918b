"""The store: instances, units, operations, events, subscribers and tokens in SQL.

SQLite by default, PostgreSQL when the URL says so. Each call is its own short transaction, so
the API threads and the engine's workers never hold a session across I/O.

Subscribers' secrets are sealed with the vault's key before they reach a row and opened only for
the drivers (`subscribers(..., secrets=True)`); where the profile allows it a digest password is
kept as HA1 only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast, overload

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .. import profiles
from ..model import (
    Conflict,
    Event,
    Instance,
    InstanceState,
    NotFound,
    Operation,
    OperationError,
    OperationKind,
    OperationState,
    StepRecord,
    Subscriber,
    Unit,
    UnitState,
    utcnow,
)
from ..vault import Vault, VaultError, ha1_pair
from .tables import EventRow, InstanceRow, OperationRow, SubscriberRow, TokenRow, UnitRow

MIGRATIONS = Path(__file__).parent / "migrations"
MAX_BLOCKS = 256


class Store:
    def __init__(self, url: str, vault: Vault | None = None):
        """`vault` seals the subscribers' secrets; by default the key file beside a SQLite database."""
        self.url = url
        self.engine = _engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._vault = vault or _default_vault(url)

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            raise VaultError("no secrets key file is set for this database: set IMSSO_SECRETS_KEY_FILE")
        return self._vault

    def migrate(self) -> None:
        """Bring the schema to the newest migration (creating it on a new database)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            config.attributes["vault"] = self._vault  # 0004 seals the secrets stored before it
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._session.begin() as session:
            yield session

    # tokens
    def add_token(self, token_id: str, token_hash: str, tenant: str, expires_at: dt.datetime) -> None:
        with self.session() as s:
            s.add(
                TokenRow(
                    id=token_id, token_hash=token_hash, tenant=tenant, created_at=utcnow(), expires_at=_utc(expires_at)
                )
            )

    def find_token(self, token_hash: str) -> tuple[str, dt.datetime] | None:
        with self.session() as s:
            row = s.scalar(sa.select(TokenRow).where(TokenRow.token_hash == token_hash))
            return (row.tenant, _aware(row.expires_at)) if row else None

    # instances
    def create_instance(self, instance: Instance) -> Instance:
        """Insert with the lowest free address block; a live name taken is a Conflict."""
        for _ in range(MAX_BLOCKS):
            with self.session() as s:
                if _live(s, instance.tenant, instance.name) is not None:
                    raise Conflict(
                        f"instance '{instance.name}' already exists for tenant {instance.tenant}",
                        {"instance": instance.name},
                    )
                taken = set(
                    s.scalars(sa.select(InstanceRow.block).where(InstanceRow.state != InstanceState.DISPOSED.value))
                )
            free = next((b for b in range(MAX_BLOCKS) if b not in taken), None)
            if free is None:
                raise Conflict(f"all {MAX_BLOCKS} address blocks are in use: dispose an instance first")
            instance.block = free
            try:
                with self.session() as s:
                    s.add(_instance_row(instance))
                return instance
            except IntegrityError:
                continue  # another request took the block or the name at the same time: look again
        raise Conflict("could not reserve an address block: too many concurrent creations")

    def get_instance(self, instance_id: str) -> Instance:
        with self.session() as s:
            row = s.get(InstanceRow, instance_id)
            if row is None:
                raise NotFound(f"no instance {instance_id}")
            return _instance(row)

    def find_instance(self, tenant: str, name: str) -> Instance | None:
        with self.session() as s:
            row = _live(s, tenant, name)
            return _instance(row) if row else None

    def list_instances(self, tenant: str | None = None, live_only: bool = True) -> list[Instance]:
        with self.session() as s:
            query = sa.select(InstanceRow).order_by(InstanceRow.created_at)
            if tenant is not None:
                query = query.where(InstanceRow.tenant == tenant)
            if live_only:
                query = query.where(InstanceRow.state != InstanceState.DISPOSED.value)
            return [_instance(r) for r in s.scalars(query)]

    def save_instance(self, instance: Instance) -> None:
        instance.updated_at = utcnow()
        with self.session() as s:
            s.merge(_instance_row(instance))

    # operations
    def start_operation(self, op: Operation) -> None:
        """Insert `op` and make it the instance's current one, or raise Conflict naming the one running."""
        with self.session() as s:
            claimed = _rowcount(
                s.execute(
                    sa.update(InstanceRow)
                    .where(InstanceRow.id == op.instance_id, InstanceRow.current_operation_id.is_(None))
                    .values(current_operation_id=op.id, updated_at=utcnow())
                )
            )
            if not claimed:
                running = s.scalar(sa.select(InstanceRow.current_operation_id).where(InstanceRow.id == op.instance_id))
                kind = s.scalar(sa.select(OperationRow.kind).where(OperationRow.id == running))
                raise Conflict(
                    f"operation {running} ({kind}) is running on this instance: wait for it "
                    f"to finish (GET /v1/operations/{running})",
                    {"operation": running, "kind": kind},
                )
            s.add(_operation_row(op))

    def queue_dispose(self, op: Operation) -> tuple[Operation, bool]:
        """Insert the dispose `op`, current at once when the instance is free, else queued behind
        the operation that holds it. A dispose already queued or running is returned instead
        (a second DELETE is the same request). Returns (the dispose, whether it is current)."""
        with self.session() as s:
            _lock_instance(s, op.instance_id)
            existing = _queued_dispose(s, op.instance_id)
            if existing is not None:
                current = s.scalar(sa.select(InstanceRow.current_operation_id).where(InstanceRow.id == op.instance_id))
                return _operation(existing), current == existing.id
            holder = s.scalar(sa.select(InstanceRow.current_operation_id).where(InstanceRow.id == op.instance_id))
            if holder is None:
                s.execute(
                    sa.update(InstanceRow).where(InstanceRow.id == op.instance_id).values(current_operation_id=op.id)
                )
            else:
                op.params = {**op.params, "cancels": holder}  # shown with the dispose
            s.add(_operation_row(op))
            return op, holder is None

    def queued_dispose(self, instance_id: str) -> Operation | None:
        """The dispose queued or running on the instance, if any."""
        with self.session() as s:
            row = _queued_dispose(s, instance_id)
            return _operation(row) if row is not None else None

    def finish_operation(
        self,
        op: Operation,
        instance: Instance,
        events: list[tuple[str, str, dict[str, Any]]],
        follow: Operation | None,
        on_dispose: Callable[[Operation], None] | None = None,
    ) -> Operation | None:
        """Record an operation's end, its instance's new state, the events, and the next operation
        (made current at once) in one transaction. A dispose queued behind `op` comes next instead
        of `follow`: `on_dispose(dispose)` may then change `op`, `instance` and `events` first.
        Returns the operation that holds the instance now."""
        with self.session() as s:
            # Locked first: a dispose queued from now on sees this end, one queued before is seen here.
            _lock_instance(s, instance.id)
            pending = _queued_dispose(s, instance.id, exclude=op.id)
            if pending is not None:
                follow = _operation(pending)
                if on_dispose is not None:
                    on_dispose(follow)
            instance.current_operation_id = follow.id if follow else None
            instance.updated_at = utcnow()
            s.merge(_operation_row(op))
            s.merge(_instance_row(instance))
            for kind, message, data in events:
                s.add(EventRow(instance_id=instance.id, time=utcnow(), kind=kind, message=message, data=data))
            if follow and pending is None:
                s.add(_operation_row(follow))
        return follow

    def reclaim_operation(self, op: Operation) -> bool:
        """Make a resumed `op` current again if the instance holds none; False if another holds it."""
        with self.session() as s:
            current = s.scalar(sa.select(InstanceRow.current_operation_id).where(InstanceRow.id == op.instance_id))
            if current == op.id:
                return True
            return bool(
                _rowcount(
                    s.execute(
                        sa.update(InstanceRow)
                        .where(InstanceRow.id == op.instance_id, InstanceRow.current_operation_id.is_(None))
                        .values(current_operation_id=op.id)
                    )
                )
            )

    def save_operation(self, op: Operation) -> None:
        with self.session() as s:
            s.merge(_operation_row(op))

    def get_operation(self, op_id: str) -> Operation:
        with self.session() as s:
            row = s.get(OperationRow, op_id)
            if row is None:
                raise NotFound(f"no operation {op_id}")
            return _operation(row)

    def operations(self, states: Iterable[OperationState] = (), instance_id: str | None = None) -> list[Operation]:
        with self.session() as s:
            query = sa.select(OperationRow).order_by(OperationRow.created_at)
            if states:
                query = query.where(OperationRow.state.in_([st.value for st in states]))
            if instance_id:
                query = query.where(OperationRow.instance_id == instance_id)
            return [_operation(r) for r in s.scalars(query)]

    # units
    def units(self, instance_id: str) -> list[Unit]:
        with self.session() as s:
            rows = s.scalars(
                sa.select(UnitRow).where(UnitRow.instance_id == instance_id).order_by(UnitRow.role, UnitRow.idx)
            )
            return [_unit(r) for r in rows]

    def add_unit(self, unit: Unit) -> None:
        with self.session() as s:
            s.add(_unit_row(unit))

    def save_unit(self, unit: Unit) -> None:
        with self.session() as s:
            s.merge(_unit_row(unit))

    def delete_unit(self, unit_id: str) -> None:
        with self.session() as s:
            s.execute(sa.delete(UnitRow).where(UnitRow.id == unit_id))

    def mark_unit_failed(self, unit: Unit, detail: str) -> bool:
        """Mark `unit` failed if it still has the pid seen and its instance runs no operation."""
        busy = sa.select(InstanceRow.id).where(
            InstanceRow.id == unit.instance_id, InstanceRow.current_operation_id.is_not(None)
        )
        with self.session() as s:
            return bool(
                _rowcount(
                    s.execute(
                        sa.update(UnitRow)
                        .where(
                            UnitRow.id == unit.id,
                            UnitRow.pid == unit.pid,
                            UnitRow.state.in_([UnitState.RUNNING.value, UnitState.STARTING.value]),
                            ~sa.exists(busy),
                        )
                        .values(state=UnitState.FAILED.value, detail=detail)
                    )
                )
            )

    def count_units(self) -> list[tuple[str, str, int]]:
        """(role, state, count) over all units."""
        with self.session() as s:
            rows = s.execute(
                sa.select(UnitRow.role, UnitRow.state, sa.func.count()).group_by(UnitRow.role, UnitRow.state)
            )
            return [(role, state, count) for role, state, count in rows]

    def count_instances(self) -> list[tuple[str, int]]:
        with self.session() as s:
            rows = s.execute(sa.select(InstanceRow.state, sa.func.count()).group_by(InstanceRow.state))
            return [(state, count) for state, count in rows]

    def addresses_in_use(self) -> set[str]:
        with self.session() as s:
            return set(s.scalars(sa.select(UnitRow.address)))

    # events
    def add_event(self, instance_id: str, kind: str, message: str, data: dict[str, Any] | None = None) -> Event:
        with self.session() as s:
            row = EventRow(instance_id=instance_id, time=utcnow(), kind=kind, message=message, data=data or {})
            s.add(row)
            s.flush()
            return _event(row)

    def events(
        self, instance_id: str, since: int = 0, limit: int = 1000, kind: str | None = None, newest_first: bool = False
    ) -> list[Event]:
        with self.session() as s:
            query = sa.select(EventRow).where(EventRow.instance_id == instance_id, EventRow.id > since)
            if kind:
                query = query.where(EventRow.kind == kind)
            order = EventRow.id.desc() if newest_first else EventRow.id
            rows = s.scalars(query.order_by(order).limit(limit))
            return [_event(r) for r in rows]

    # subscribers
    def put_subscriber(self, sub: Subscriber) -> bool:
        """Insert or replace, its secrets sealed (a password as HA1 where the profile says so);
        True when it was new."""
        with self.vault.shared():  # a rotation waits: nothing gets sealed with a key it drops
            with self.session() as s:
                self._check_key(s)
                profile = s.scalar(sa.select(InstanceRow.profile).where(InstanceRow.id == sub.instance_id))
                values = sealed_secrets(self.vault, sub, credentials_of(profile))
                existing = s.get(SubscriberRow, (sub.instance_id, sub.user, sub.domain))
                s.merge(
                    SubscriberRow(instance_id=sub.instance_id, user=sub.user, domain=sub.domain, amf=sub.amf, **values)
                )
                return existing is None

    def delete_subscriber(self, instance_id: str, user: str, domain: str) -> bool:
        with self.session() as s:
            return bool(
                _rowcount(
                    s.execute(
                        sa.delete(SubscriberRow).where(
                            SubscriberRow.instance_id == instance_id,
                            SubscriberRow.user == user,
                            SubscriberRow.domain == domain,
                        )
                    )
                )
            )

    def subscribers(self, instance_id: str, secrets: bool = True) -> list[Subscriber]:
        """The instance's subscribers; with `secrets` opened for a driver, else with none but the
        kinds of credentials they have."""
        with self.session() as s:
            rows = s.scalars(
                sa.select(SubscriberRow).where(SubscriberRow.instance_id == instance_id).order_by(SubscriberRow.user)
            )
            return [self._subscriber(r, secrets) for r in rows]

    def rotate_secrets(self) -> int:
        """A new primary key, every secret sealed again with it, then the old keys dropped; the
        number of rows sealed again. Rerun after a crash, it finishes the rotation it finds."""
        vault = self.vault
        with vault.exclusive():
            with self.session() as s:
                self._check_key(s)
            keys = vault.keys(create=True)
            if len(keys) == 1:  # more than one: a rotation stopped halfway, finish that one
                vault.write_keys([Fernet.generate_key()] + keys)
        done = self._reseal()
        with vault.exclusive():  # what was sealed meanwhile went under the new key; make sure
            done += self._reseal()
            vault.write_keys(vault.keys()[:1])
        return done

    def _reseal(self) -> int:
        done = 0
        with self.session() as s:
            for row in s.scalars(sa.select(SubscriberRow)):
                tokens = [getattr(row, name) for name in SubscriberRow.SECRETS]
                if all(self.vault.sealed_with_primary(t) for t in tokens):
                    continue
                for name, token in zip(SubscriberRow.SECRETS, tokens):
                    setattr(row, name, self.vault.reseal(token))
                done += 1
        return done

    def _check_key(self, s: Session) -> None:
        """A missing key file with secrets in the database is an error, not a reason for a new key."""
        if self.vault.exists():
            return
        sealed = s.scalar(
            sa.select(sa.func.count())
            .select_from(SubscriberRow)
            .where(sa.or_(*[getattr(SubscriberRow, name) != "" for name in SubscriberRow.SECRETS]))
        )
        if sealed:
            raise VaultError(
                f"the secrets key file {self.vault.key_file} is missing and the database "
                f"holds {sealed} subscriber(s) sealed with it: restore the file (or set "
                "IMSSO_SECRETS_KEY_FILE to where it is)"
            )

    def _subscriber(self, r: SubscriberRow, secrets: bool) -> Subscriber:
        sub = Subscriber(r.instance_id, r.user, r.domain, "", amf=r.amf or "8000")
        if secrets:
            opened: dict[str, Any] = {name: self.vault.open(getattr(r, name) or "") for name in SubscriberRow.SECRETS}
            return dataclasses.replace(sub, **opened)
        sub.credentials = tuple(kind for kind, has in (("digest", r.password or r.ha1), ("aka", r.k)) if has)
        return sub


def credentials_of(profile_name: str | None) -> str:
    """How the profile keeps digest passwords; "encrypted" (recoverable) when it cannot be read."""
    try:
        return profiles.load(profile_name or "").credentials
    except Exception:  # noqa: BLE001 - a profile gone from disk must not lose a secret
        return "encrypted"


def sealed_secrets(vault: Vault, sub: Subscriber, credentials: str) -> dict[str, str]:
    """The row's secret columns for `sub`: HA1 instead of the password when `credentials` is ha1."""
    password, ha1, ha1b = sub.password, sub.ha1, sub.ha1b
    if credentials == "ha1" and password:
        ha1, ha1b = ha1_pair(sub.user, sub.domain, password)
        password = ""
    return {
        "password": vault.seal(password),
        "ha1": vault.seal(ha1),
        "ha1b": vault.seal(ha1b),
        "k": vault.seal(sub.k),
        "opc": vault.seal(sub.opc),
    }


def _default_vault(url: str) -> Vault | None:
    """The key file beside a SQLite database file (the data folder); none for other databases."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Vault(Path(parsed.database).absolute().parent / "secrets.key")
    return None


def _engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):  # WAL lets the API read while a worker writes
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _lock_instance(s: Session, instance_id: str) -> None:
    """Take the instance's row for the rest of the transaction (SQLite: the write lock), so what is
    read next cannot change before the commit."""
    s.execute(sa.update(InstanceRow).where(InstanceRow.id == instance_id).values(updated_at=utcnow()))


def _queued_dispose(s: Session, instance_id: str, exclude: str | None = None) -> OperationRow | None:
    query = sa.select(OperationRow).where(
        OperationRow.instance_id == instance_id,
        OperationRow.kind == OperationKind.DISPOSE.value,
        OperationRow.state.in_([OperationState.QUEUED.value, OperationState.RUNNING.value]),
    )
    if exclude:
        query = query.where(OperationRow.id != exclude)
    return s.scalar(query.order_by(OperationRow.created_at).limit(1))


def _live(s: Session, tenant: str, name: str) -> InstanceRow | None:
    return s.scalar(
        sa.select(InstanceRow).where(
            InstanceRow.tenant == tenant, InstanceRow.name == name, InstanceRow.state != InstanceState.DISPOSED.value
        )
    )


def _rowcount(result: sa.Result[Any]) -> int:
    """Rows an UPDATE or DELETE changed (a cursor result, which Session.execute types as any result)."""
    return cast(sa.CursorResult[Any], result).rowcount


@overload
def _aware(value: dt.datetime) -> dt.datetime: ...
@overload
def _aware(value: dt.datetime | None) -> dt.datetime | None: ...
def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite returns naive datetimes; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite keeps no offset: store UTC so what comes back is the same instant.
    return value.astimezone(dt.UTC) if value is not None and value.tzinfo else value


def _instance_row(i: Instance) -> InstanceRow:
    return InstanceRow(
        id=i.id,
        tenant=i.tenant,
        name=i.name,
        profile=i.profile,
        driver=i.driver,
        domain=i.domain,
        block=i.block,
        sizes=dict(i.sizes),
        attributes=dict(i.attributes),
        state=i.state.value,
        stack_state=i.stack_state,
        provisioned=i.provisioned,
        test_subscribers=i.test_subscribers,
        secret=i.secret,
        stack_id=i.stack_id,
        outputs=dict(i.outputs),
        current_operation_id=i.current_operation_id,
        failed_operation_id=i.failed_operation_id,
        created_at=_utc(i.created_at),
        updated_at=_utc(i.updated_at),
    )


def _instance(r: InstanceRow) -> Instance:
    return Instance(
        id=r.id,
        tenant=r.tenant,
        name=r.name,
        profile=r.profile,
        driver=r.driver,
        domain=r.domain,
        block=r.block,
        sizes=dict(r.sizes),
        attributes=dict(r.attributes),
        state=InstanceState(r.state),
        stack_state=r.stack_state,
        provisioned=r.provisioned,
        test_subscribers=r.test_subscribers,
        secret=r.secret,
        stack_id=r.stack_id or "",
        outputs=dict(r.outputs or {}),
        current_operation_id=r.current_operation_id,
        failed_operation_id=r.failed_operation_id,
        created_at=_aware(r.created_at),
        updated_at=_aware(r.updated_at),
    )


def _unit_row(u: Unit) -> UnitRow:
    return UnitRow(
        id=u.id,
        instance_id=u.instance_id,
        name=u.name,
        role=u.role,
        idx=u.index,
        address=u.address,
        state=u.state.value,
        pid=u.pid,
        started_at=u.started_at,
        detail=u.detail,
    )


def _unit(r: UnitRow) -> Unit:
    return Unit(
        id=r.id,
        instance_id=r.instance_id,
        name=r.name,
        role=r.role,
        index=r.idx,
        address=r.address,
        state=UnitState(r.state),
        pid=r.pid,
        started_at=r.started_at,
        detail=r.detail or "",
    )


def _operation_row(o: Operation) -> OperationRow:
    return OperationRow(
        id=o.id,
        instance_id=o.instance_id,
        kind=o.kind.value,
        params=dict(o.params),
        state=o.state.value,
        steps=[dataclasses.asdict(s) for s in o.steps],
        error=dataclasses.asdict(o.error) if o.error else None,
        attempts=o.attempts,
        created_at=_utc(o.created_at),
        started_at=_utc(o.started_at),
        finished_at=_utc(o.finished_at),
    )


def _operation(r: OperationRow) -> Operation:
    return Operation(
        id=r.id,
        instance_id=r.instance_id,
        kind=OperationKind(r.kind),
        params=dict(r.params),
        state=OperationState(r.state),
        steps=[StepRecord(**s) for s in r.steps],
        error=OperationError(**r.error) if r.error else None,
        attempts=r.attempts,
        created_at=_aware(r.created_at),
        started_at=_aware(r.started_at),
        finished_at=_aware(r.finished_at),
    )


def _event(r: EventRow) -> Event:
    return Event(
        id=r.id, instance_id=r.instance_id, time=_aware(r.time), kind=r.kind, message=r.message, data=dict(r.data)
    )
