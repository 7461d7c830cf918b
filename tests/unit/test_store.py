"""The store, on SQLite and on PostgreSQL (the `store` fixture runs each test on both)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from imsso.model import (
    Conflict,
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
)
from imsso.store import Store
from imsso.vault import ha1_pair

UTC = dt.UTC


def new_id() -> str:
    return str(uuid.uuid4())


def make_instance(name: str = "core", tenant: str = "acme", **fields) -> Instance:
    values = dict(
        id=new_id(),
        tenant=tenant,
        name=name,
        profile="sip-core",
        driver="local",
        domain=f"{name}.{tenant}.ims.test",
        sizes={"pcscf": 1, "scscf": 2},
        attributes={"region": "eu", "tags": ["a", "b"], "nested": {"x": 1}},
    )
    values.update(fields)
    return Instance(**values)


def make_operation(instance_id: str, kind: OperationKind = OperationKind.DEPLOY, **fields) -> Operation:
    return Operation(id=new_id(), instance_id=instance_id, kind=kind, params=fields.pop("params", {}), **fields)


def make_unit(instance_id: str, name: str, address: str, role: str = "pcscf", index: int = 0, **fields) -> Unit:
    return Unit(id=new_id(), instance_id=instance_id, name=name, role=role, index=index, address=address, **fields)


def run_together(count: int, work) -> list:
    """Run work(i) in `count` threads released at the same moment; the results (or exceptions)."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - the test looks at what each thread got
            results[i] = e

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    return results


# --- schema -----------------------------------------------------------------------------------------


def test_an_instance_stored_before_stacks_reads_back_without_one(store_url: str):
    """A database of the first schema, upgraded: its instances have no stack and no outputs."""
    from alembic import command
    from alembic.config import Config

    from imsso.store import MIGRATIONS

    old = Store(store_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.exec_driver_sql(
            "INSERT INTO instances (id, tenant, name, profile, driver, domain, block, sizes, attributes,"
            " state, stack_state, provisioned, test_subscribers, secret, created_at, updated_at) VALUES"
            " ('i-1', 'acme', 'old', 'sip-core', 'local', 'old.ims.test', 0, '{}', '{}', 'active',"
            " 'CREATE_COMPLETE', true, true, 's', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    old.migrate()
    got = old.get_instance("i-1")
    assert (got.name, got.stack_id, got.outputs) == ("old", "", {})
    got.stack_id, got.outputs = "heat-1", {"mcn.endpoint.pcscf-1.net.private": "10.0.0.10"}
    old.save_instance(got)
    assert old.get_instance("i-1").outputs == {"mcn.endpoint.pcscf-1.net.private": "10.0.0.10"}
    old.close()


def test_migrate_twice_is_a_no_op(store: Store):
    instance = store.create_instance(make_instance())
    with store.engine.connect() as c:
        tables_before = set(sa.inspect(c).get_table_names())
        version_before = c.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()

    store.migrate()
    Store(store.url).migrate()  # and from a new Store on the same database

    with store.engine.connect() as c:
        assert set(sa.inspect(c).get_table_names()) == tables_before
        assert c.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == version_before
    assert {"tokens", "instances", "units", "operations", "events", "subscribers", "alembic_version"} <= tables_before
    assert version_before == ["0004"]
    assert store.get_instance(instance.id) == instance


# --- instances --------------------------------------------------------------------------------------


def test_instance_round_trip(store: Store):
    created = dt.datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    instance = make_instance(
        state=InstanceState.ACTIVE,
        stack_state="CREATE_COMPLETE",
        provisioned=True,
        test_subscribers=False,
        secret="s3cret",
        current_operation_id=None,
        failed_operation_id=new_id(),
        created_at=created,
        updated_at=created + dt.timedelta(seconds=1),
    )
    store.create_instance(instance)

    got = store.get_instance(instance.id)
    assert got == instance  # every field, JSON included
    assert got is not instance
    assert got.sizes == {"pcscf": 1, "scscf": 2}
    assert got.attributes == {"region": "eu", "tags": ["a", "b"], "nested": {"x": 1}}
    assert isinstance(got.state, InstanceState) and got.state is InstanceState.ACTIVE
    for value in (got.created_at, got.updated_at):
        assert value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)
    assert got.created_at == created

    assert store.find_instance("acme", "core") == instance
    assert store.find_instance("acme", "other") is None
    assert store.find_instance("other-tenant", "core") is None
    with pytest.raises(NotFound):
        store.get_instance(new_id())


def test_save_instance_updates_fields(store: Store):
    instance = store.create_instance(make_instance())
    before = instance.updated_at
    instance.state = InstanceState.SCALING
    instance.sizes = {"pcscf": 3, "scscf": 2}
    instance.attributes["added"] = True
    instance.current_operation_id = new_id()
    store.save_instance(instance)

    got = store.get_instance(instance.id)
    assert got.state is InstanceState.SCALING
    assert got.sizes == {"pcscf": 3, "scscf": 2}
    assert got.attributes["added"] is True
    assert got.current_operation_id == instance.current_operation_id
    assert got.updated_at >= before


def test_non_utc_datetimes_keep_their_instant(store: Store):
    created = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    instance = store.create_instance(make_instance(created_at=created))
    assert store.get_instance(instance.id).created_at == created


def test_same_live_name_conflicts_until_disposed(store: Store):
    first = store.create_instance(make_instance("core", "acme"))
    with pytest.raises(Conflict) as raised:
        store.create_instance(make_instance("core", "acme"))
    assert "core" in raised.value.message
    assert raised.value.details == {"instance": "core"}
    assert [i.id for i in store.list_instances("acme")] == [first.id]

    other_tenant = store.create_instance(make_instance("core", "globex"))  # names are per tenant
    assert other_tenant.id != first.id

    first.state = InstanceState.DISPOSED
    store.save_instance(first)
    second = store.create_instance(make_instance("core", "acme"))

    assert store.find_instance("acme", "core").id == second.id
    assert [i.id for i in store.list_instances("acme")] == [second.id]
    assert {i.id for i in store.list_instances("acme", live_only=False)} == {first.id, second.id}
    assert store.get_instance(first.id).state is InstanceState.DISPOSED  # kept as history


def test_address_blocks_distinct_and_reused_after_disposal(store: Store):
    a = store.create_instance(make_instance("a"))
    b = store.create_instance(make_instance("b"))
    c = store.create_instance(make_instance("c"))
    assert [a.block, b.block, c.block] == [0, 1, 2]
    assert store.get_instance(b.id).block == 1

    b.state = InstanceState.DISPOSED
    store.save_instance(b)
    d = store.create_instance(make_instance("d"))
    assert d.block == 1  # the lowest free block
    e = store.create_instance(make_instance("e"))
    assert e.block == 3

    live = store.list_instances()
    assert sorted(i.block for i in live) == [0, 1, 2, 3]
    assert store.get_instance(b.id).block == 1  # the disposed one keeps its history


def test_concurrent_creations_get_distinct_blocks(store: Store):
    results = run_together(6, lambda i: store.create_instance(make_instance(f"n{i}")))
    assert all(isinstance(r, Instance) for r in results), results
    assert sorted(r.block for r in results) == list(range(6))
    assert sorted(i.block for i in store.list_instances()) == list(range(6))


def test_concurrent_creations_of_one_name_one_wins(store: Store):
    results = run_together(5, lambda i: store.create_instance(make_instance("same")))
    winners = [r for r in results if isinstance(r, Instance)]
    assert len(winners) == 1, results
    assert all(isinstance(r, Conflict) for r in results if r not in winners), results
    assert [i.id for i in store.list_instances()] == [winners[0].id]


# --- operations -------------------------------------------------------------------------------------


def test_start_operation_conflicts_while_one_runs(store: Store):
    instance = store.create_instance(make_instance())
    deploy = make_operation(instance.id, OperationKind.DEPLOY)
    store.start_operation(deploy)
    assert store.get_instance(instance.id).current_operation_id == deploy.id
    assert store.get_operation(deploy.id) == deploy

    scale = make_operation(instance.id, OperationKind.SCALE)
    with pytest.raises(Conflict) as raised:
        store.start_operation(scale)
    assert raised.value.details == {"operation": deploy.id, "kind": "deploy"}
    assert deploy.id in raised.value.message and "deploy" in raised.value.message
    with pytest.raises(NotFound):
        store.get_operation(scale.id)  # not inserted
    assert store.get_instance(instance.id).current_operation_id == deploy.id

    current = store.get_instance(instance.id)
    current.current_operation_id = None  # what the engine does when the operation ends
    store.save_instance(current)
    store.start_operation(scale)
    assert store.get_instance(instance.id).current_operation_id == scale.id


def test_start_operation_concurrently_exactly_one_wins(store: Store):
    instance = store.create_instance(make_instance())
    ops = [make_operation(instance.id, OperationKind.SCALE) for _ in range(8)]

    results = run_together(len(ops), lambda i: store.start_operation(ops[i]))

    winners = [op for op, r in zip(ops, results) if r is None]
    assert len(winners) == 1, results
    winner = winners[0]
    losers = [r for r in results if r is not None]
    assert all(isinstance(r, Conflict) for r in losers), losers
    assert all(r.details == {"operation": winner.id, "kind": "scale"} for r in losers), losers
    assert store.get_instance(instance.id).current_operation_id == winner.id
    assert [o.id for o in store.operations(instance_id=instance.id)] == [winner.id]


def test_operation_round_trip_with_steps_and_error(store: Store):
    instance = store.create_instance(make_instance())
    op = make_operation(
        instance.id,
        OperationKind.SCALE,
        params={"sizes": {"pcscf": 3}},
        created_at=dt.datetime(2026, 5, 1, 10, 0, 0, 1, tzinfo=UTC),
    )
    store.start_operation(op)

    op.state = OperationState.FAILED
    op.attempts = 2
    op.started_at = dt.datetime(2026, 5, 1, 10, 0, 1, tzinfo=UTC)
    op.finished_at = dt.datetime(2026, 5, 1, 10, 0, 9, 999999, tzinfo=UTC)
    op.steps = [
        StepRecord("plan", "done", "2026-05-01T10:00:01Z", "2026-05-01T10:00:02Z", "3 units"),
        StepRecord("start-units", "failed", "2026-05-01T10:00:02Z", "2026-05-01T10:00:09Z", "pcscf-2 did not answer"),
        StepRecord("route", "running", "2026-05-01T10:00:09Z"),
    ]
    op.error = OperationError("start-units", "pcscf-2 did not start", cause="timeout after 5s")
    store.save_operation(op)

    got = store.get_operation(op.id)
    assert got == op
    assert all(isinstance(s, StepRecord) for s in got.steps)
    assert got.steps[2].finished_at is None and got.steps[2].detail == ""
    assert isinstance(got.error, OperationError) and got.error.cause == "timeout after 5s"
    assert got.kind is OperationKind.SCALE and got.state is OperationState.FAILED
    for value in (got.created_at, got.started_at, got.finished_at):
        assert value.utcoffset() == dt.timedelta(0)

    op.error = None  # a retry clears it
    op.state = OperationState.RUNNING
    store.save_operation(op)
    assert store.get_operation(op.id).error is None


def test_operations_filtered_by_state_and_instance(store: Store):
    a = store.create_instance(make_instance("a"))
    b = store.create_instance(make_instance("b"))
    base = dt.datetime(2026, 1, 1, tzinfo=UTC)
    op_a = make_operation(a.id, created_at=base)
    op_b = make_operation(b.id, created_at=base + dt.timedelta(seconds=1))
    store.start_operation(op_a)
    store.start_operation(op_b)
    op_a.state = OperationState.SUCCEEDED
    store.save_operation(op_a)

    assert [o.id for o in store.operations()] == [op_a.id, op_b.id]
    assert [o.id for o in store.operations(states=[OperationState.QUEUED])] == [op_b.id]
    assert [o.id for o in store.operations(states=[OperationState.SUCCEEDED, OperationState.QUEUED])] == [
        op_a.id,
        op_b.id,
    ]
    assert [o.id for o in store.operations(instance_id=a.id)] == [op_a.id]
    assert store.operations(states=[OperationState.RUNNING]) == []


# --- units ------------------------------------------------------------------------------------------


def test_units_add_save_delete(store: Store):
    instance = store.create_instance(make_instance())
    s1 = make_unit(instance.id, "scscf-1", "127.0.0.11", role="scscf", index=1)
    p2 = make_unit(instance.id, "pcscf-2", "127.0.0.3", index=2)
    p1 = make_unit(instance.id, "pcscf-1", "127.0.0.2", index=1, detail="first")
    for unit in (s1, p2, p1):
        store.add_unit(unit)

    assert store.units(instance.id) == [p1, p2, s1]  # by role, then index
    assert store.addresses_in_use() == {"127.0.0.2", "127.0.0.3", "127.0.0.11"}

    p1.state = UnitState.RUNNING
    p1.pid = 4242
    p1.started_at = 1_790_000_000.25
    p1.detail = "answers OPTIONS"
    store.save_unit(p1)
    got = store.units(instance.id)[0]
    assert got == p1
    assert got.state is UnitState.RUNNING

    store.delete_unit(p2.id)
    assert [u.name for u in store.units(instance.id)] == ["pcscf-1", "scscf-1"]
    assert store.addresses_in_use() == {"127.0.0.2", "127.0.0.11"}
    store.delete_unit(p2.id)  # deleting again is harmless

    other = store.create_instance(make_instance("other"))
    assert store.units(other.id) == []


def test_unit_address_is_unique(store: Store):
    a = store.create_instance(make_instance("a"))
    b = store.create_instance(make_instance("b"))
    store.add_unit(make_unit(a.id, "pcscf-1", "127.0.1.2"))
    with pytest.raises(IntegrityError):
        store.add_unit(make_unit(b.id, "pcscf-1", "127.0.1.2"))  # another instance, same address
    with pytest.raises(IntegrityError):
        store.add_unit(make_unit(a.id, "pcscf-1", "127.0.1.3"))  # same name in one instance
    assert [u.address for u in store.units(a.id)] == ["127.0.1.2"]
    assert store.units(b.id) == []

    store.add_unit(make_unit(b.id, "pcscf-1", "127.0.1.4"))  # the names are per instance
    assert store.addresses_in_use() == {"127.0.1.2", "127.0.1.4"}


# --- events -----------------------------------------------------------------------------------------


def test_events_in_order_and_since(store: Store):
    instance = store.create_instance(make_instance("a"))
    other = store.create_instance(make_instance("b"))
    first = store.add_event(instance.id, "lifecycle", "deploying", {"from": "initialised"})
    store.add_event(other.id, "lifecycle", "not mine")
    second = store.add_event(instance.id, "step", "plan done")
    third = store.add_event(instance.id, "decision", "scale out", {"pcscf": [1, 2]})

    assert first.id < second.id < third.id
    assert first.time.utcoffset() == dt.timedelta(0)
    assert second.data == {}

    events = store.events(instance.id)
    assert [e.id for e in events] == [first.id, second.id, third.id]
    assert events[0] == first
    assert [(e.kind, e.message, e.data) for e in events] == [
        ("lifecycle", "deploying", {"from": "initialised"}),
        ("step", "plan done", {}),
        ("decision", "scale out", {"pcscf": [1, 2]}),
    ]
    assert all(e.time.tzinfo is not None for e in events)
    assert events[0].time <= events[1].time <= events[2].time

    assert [e.id for e in store.events(instance.id, since=first.id)] == [second.id, third.id]
    assert store.events(instance.id, since=third.id) == []
    assert [e.id for e in store.events(instance.id, limit=2)] == [first.id, second.id]
    assert [e.message for e in store.events(other.id)] == ["not mine"]


# --- subscribers ------------------------------------------------------------------------------------


def test_subscribers_put_list_delete(store: Store):
    """A profile that needs the password back (ims) gets it back; sip-core keeps HA1 only."""
    instance = store.create_instance(make_instance("a", profile="ims"))
    other = store.create_instance(make_instance("b"))
    domain = instance.domain

    assert store.put_subscriber(Subscriber(instance.id, "bob", domain, "pw1")) is True
    assert store.put_subscriber(Subscriber(instance.id, "alice", domain, "pw2", "00" * 16, "11" * 16)) is True
    assert store.put_subscriber(Subscriber(other.id, "bob", domain, "elsewhere")) is True
    assert store.put_subscriber(Subscriber(instance.id, "bob", domain, "changed")) is False

    assert store.subscribers(instance.id) == [
        Subscriber(instance.id, "alice", domain, "pw2", "00" * 16, "11" * 16),
        Subscriber(instance.id, "bob", domain, "changed"),
    ]
    assert store.subscribers(instance.id)[1].aor == f"sip:bob@{domain}"
    hidden = store.subscribers(instance.id, secrets=False)
    assert [(s.user, s.password, s.k, s.opc, s.auth) for s in hidden] == [
        ("alice", "", "", "", ["digest", "aka"]),
        ("bob", "", "", "", ["digest"]),
    ]

    assert store.delete_subscriber(instance.id, "bob", domain) is True
    assert store.delete_subscriber(instance.id, "bob", domain) is False
    assert store.delete_subscriber(instance.id, "alice", "wrong.domain") is False
    assert [s.user for s in store.subscribers(instance.id)] == ["alice"]
    ha1, ha1b = ha1_pair("bob", domain, "elsewhere")
    assert store.subscribers(other.id) == [Subscriber(other.id, "bob", domain, "", ha1=ha1, ha1b=ha1b)]


# --- tokens -----------------------------------------------------------------------------------------


def test_tokens_add_find(store: Store):
    expires = dt.datetime(2027, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    store.add_token(new_id(), "a" * 64, "acme", expires)
    store.add_token(new_id(), "b" * 64, "globex", expires + dt.timedelta(days=1))

    found = store.find_token("a" * 64)
    assert found == ("acme", expires)
    assert found[1].utcoffset() == dt.timedelta(0)
    assert store.find_token("b" * 64) == ("globex", expires + dt.timedelta(days=1))
    assert store.find_token("c" * 64) is None

    with pytest.raises(IntegrityError):
        store.add_token(new_id(), "a" * 64, "other", expires)  # one hash, one token
    assert store.find_token("a" * 64) == ("acme", expires)
