"""A dispose queued behind a running operation, in the store (SQLite and PostgreSQL): the operation's
end hands the instance to it in the same transaction, whatever the timing of the two."""

from __future__ import annotations

import threading
import uuid

from imsso.model import Instance, InstanceState, Operation, OperationKind, OperationState
from imsso.store import Store

K = OperationKind


def new_instance(store: Store, name: str) -> Instance:
    inst = Instance(
        id=str(uuid.uuid4()),
        tenant="acme",
        name=name,
        profile="sip-core",
        driver="local",
        domain="ims.test",
        sizes={"scscf": 1},
        attributes={},
    )
    store.create_instance(inst)
    return store.get_instance(inst.id)


def running(store: Store, instance: Instance, kind: K = K.DEPLOY) -> Operation:
    op = Operation(id=str(uuid.uuid4()), instance_id=instance.id, kind=kind, params={"then": ["provision"]})
    store.start_operation(op)
    op.state = OperationState.RUNNING
    store.save_operation(op)
    return op


def ended(store: Store, op: Operation, instance: Instance, follow: Operation | None = None, seen=None):
    op.state = OperationState.SUCCEEDED
    instance = store.get_instance(instance.id)
    instance.state = InstanceState.DEPLOYED
    return store.finish_operation(
        op, instance, [("lifecycle", "deploy succeeded", {})], follow, (seen.append if seen is not None else None)
    )


def dispose_of(instance: Instance) -> Operation:
    return Operation(id=str(uuid.uuid4()), instance_id=instance.id, kind=K.DISPOSE, params={})


def test_a_dispose_on_a_free_instance_is_current_at_once(store: Store):
    inst = new_instance(store, "free")
    op, current = store.queue_dispose(dispose_of(inst))
    assert current and store.get_instance(inst.id).current_operation_id == op.id
    assert store.queued_dispose(inst.id).id == op.id


def test_a_dispose_behind_an_operation_waits_then_comes_before_its_follow_up(store: Store):
    inst = new_instance(store, "busy")
    deploy = running(store, inst)
    dispose, current = store.queue_dispose(dispose_of(inst))
    assert not current and dispose.params == {"cancels": deploy.id}
    assert store.get_instance(inst.id).current_operation_id == deploy.id
    again, _ = store.queue_dispose(dispose_of(inst))
    assert again.id == dispose.id  # one dispose per instance, whoever asks again

    provision = Operation(id=str(uuid.uuid4()), instance_id=inst.id, kind=K.PROVISION, params={})
    seen: list[Operation] = []
    nxt = ended(store, deploy, inst, provision, seen)
    assert nxt.id == dispose.id and [o.id for o in seen] == [dispose.id]
    assert store.get_instance(inst.id).current_operation_id == dispose.id
    assert [o.kind for o in store.operations(instance_id=inst.id)] == [K.DEPLOY, K.DISPOSE]  # no provision


def test_a_dispose_racing_the_end_of_an_operation_is_never_orphaned(store: Store):
    """Whichever commits first, the dispose ends up holding the instance: never queued behind an
    operation that already ended."""
    for n in range(20):
        inst = new_instance(store, f"race-{n}")
        deploy = running(store, inst)
        gate = threading.Barrier(2)
        results: dict[str, object] = {}

        def queue():
            gate.wait()
            results["dispose"] = store.queue_dispose(dispose_of(inst))[0]

        def finish():
            gate.wait()
            results["next"] = ended(store, deploy, inst)

        threads = [threading.Thread(target=queue), threading.Thread(target=finish)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        dispose = results["dispose"]
        assert store.get_instance(inst.id).current_operation_id == dispose.id, f"round {n}"
        assert results["next"] is None or results["next"].id == dispose.id
