"""The engine and the service layer around an in-memory fake driver (tests/fakes.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakes import FakeDriver, Orchestrator
from imsso.engine import MAX_ATTEMPTS
from imsso.model import Conflict, InstanceState, NotApplicable, NotFound, OperationKind, OperationState, UnitState
from imsso.vault import ha1_pair

K = OperationKind


@pytest.fixture
def orch(tmp_path: Path):
    o = Orchestrator(tmp_path / "data")
    o.start()
    yield o
    o.stop()


def deploy_new(orch: Orchestrator, name: str = "core", sizes=None, then=(K.DEPLOY,)):
    instance, op = orch.service.create(orch.caller(), name, sizes=sizes, then=then)
    return instance, orch.wait_chain(op.id)


def dispatcher(orch: Orchestrator, instance_id: str) -> list[str]:
    text = orch.driver.files[(instance_id, "pcscf-1")]["dispatcher.list"]
    return re.findall(r"^1 sip:([\d.]+):5060", text, re.M)


def step_names(op) -> list[str]:
    return [s.name for s in op.steps]


# --- deploy and provision ----------------------------------------------------------------------------


def test_deploy_of_a_new_instance(orch: Orchestrator):
    instance, op = deploy_new(orch)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert op.kind == K.DEPLOY and op.error is None and op.finished_at is not None
    assert all(s.state == "done" for s in op.steps)
    assert "reserve units" in step_names(op) and "configure" in step_names(op)

    instance = orch.store.get_instance(instance.id)
    assert instance.state == InstanceState.DEPLOYED
    assert instance.stack_state == "CREATE_COMPLETE"
    assert instance.current_operation_id is None and instance.failed_operation_id is None
    units = orch.store.units(instance.id)
    assert sorted(u.name for u in units) == ["dns-1", "pcscf-1", "scscf-1"]
    assert all(u.state == UnitState.RUNNING for u in units)
    assert all(u.address.startswith("127.200.") for u in units)
    assert len({u.address for u in units}) == 3
    # started in the profile's order: what others point at first
    assert orch.driver.units_called("ensure_unit") == ["scscf-1", "pcscf-1", "dns-1"]
    assert orch.driver.units_called("wait_ready") == ["scscf-1", "pcscf-1", "dns-1"]
    # the P-CSCF routes to the running S-CSCF
    scscf = next(u for u in units if u.name == "scscf-1")
    assert dispatcher(orch, instance.id) == [scscf.address]
    # the test subscribers exist from deploy on (a stack's servers boot with their table), but
    # deploy alone does not check the service
    assert sorted(s.user for s in orch.store.subscribers(instance.id)) == ["alice", "bob"]
    assert orch.driver.called("check_service") == []


def test_stack_state_is_in_progress_while_deploying(tmp_path: Path):
    orch = Orchestrator(tmp_path)
    entered, release = orch.driver.hold("wait_ready")
    orch.start()
    try:
        instance, op = orch.service.create(orch.caller(), "core", then=(K.DEPLOY,))
        assert instance.stack_state == "INIT_COMPLETE"  # never CREATE_COMPLETE before a deploy
        assert entered.wait(5)
        during = orch.store.get_instance(instance.id)
        assert during.state == InstanceState.DEPLOYING
        assert during.stack_state == "CREATE_IN_PROGRESS"
        assert during.current_operation_id == op.id
        release.set()
        assert orch.wait(op.id).state == OperationState.SUCCEEDED
    finally:
        orch.stop()


def test_deploy_then_provision_ends_active_with_two_test_subscribers(orch: Orchestrator):
    instance, first = orch.service.create(
        orch.caller(), "core", attributes={"mcn.endpoint.maas": "160.85.4.50"}, then=(K.DEPLOY, K.PROVISION)
    )
    assert first.kind == K.DEPLOY
    last = orch.wait_chain(first.id)
    assert last.kind == K.PROVISION and last.state == OperationState.SUCCEEDED, last.error
    assert orch.store.get_operation(first.id).params["followed_by"] == last.id
    assert last.params["after"] == first.id

    instance = orch.store.get_instance(instance.id)
    assert instance.state == InstanceState.ACTIVE
    assert instance.provisioned
    assert instance.stack_state == "CREATE_COMPLETE"
    subs = orch.store.subscribers(instance.id)
    assert [s.user for s in subs] == ["alice", "bob"]
    # sip-core keeps HA1 only: the generated password is gone once hashed
    assert all(s.domain == instance.domain and not s.password and len(s.ha1) == 32 for s in subs)
    assert orch.driver.subscribers[instance.id] == ["alice", "bob"]  # pushed to the units
    # readiness proven through the P-CSCF with a real subscriber
    assert [c.data["user"] for c in orch.driver.called("check_service")] == ["alice"]
    assert "readiness through the P-CSCF" in step_names(last)
    assert any("mcn.endpoint.maas=160.85.4.50" in s.detail for s in last.steps)
    messages = [e.message for e in orch.store.events(instance.id)]
    assert messages.index("deploy succeeded") < messages.index("provision succeeded")
    assert messages.index("provision requested after deploy") < messages.index("provision started")


def test_events_tell_deploy_succeeded_before_the_provision_that_follows(orch: Orchestrator):
    instance, first = orch.service.create(orch.caller(), "core", then=(K.DEPLOY, K.PROVISION))
    orch.wait_chain(first.id)
    messages = [e.message for e in orch.store.events(instance.id)]
    assert messages.index("deploy succeeded") < messages.index("provision requested after deploy")
    assert messages.index("deploy succeeded") < messages.index("provision started")


def test_provision_without_test_subscribers(orch: Orchestrator):
    instance, op = orch.service.create(
        orch.caller(), "core", attributes={"imsso.test_subscribers": "false"}, then=(K.DEPLOY, K.PROVISION)
    )
    assert orch.wait_chain(op.id).state == OperationState.SUCCEEDED
    assert orch.store.subscribers(instance.id) == []
    assert orch.store.get_instance(instance.id).state == InstanceState.ACTIVE


# --- failure and retry ---------------------------------------------------------------------------------


def test_a_driver_failure_fails_the_operation_with_the_step_and_message(orch: Orchestrator):
    orch.driver.fail(
        "preflight",
        "kamailio is not installed: install the Debian packages kamailio",
        cause="which kamailio: not found",
    )
    instance, op = deploy_new(orch)
    assert op.state == OperationState.FAILED
    assert op.error.step == "preflight"
    assert op.error.message == "kamailio is not installed: install the Debian packages kamailio"
    assert op.error.cause == "which kamailio: not found"
    assert op.steps[-1].name == "preflight" and op.steps[-1].state == "failed"

    instance = orch.store.get_instance(instance.id)
    assert instance.state == InstanceState.FAILED
    assert instance.stack_state == "CREATE_FAILED"
    assert instance.failed_operation_id == op.id
    assert instance.current_operation_id is None
    failures = [e for e in orch.store.events(instance.id) if e.kind == "failure"]
    assert failures and "deploy failed at 'preflight'" in failures[-1].message
    # provision cannot follow a deploy that never finished
    with pytest.raises(NotApplicable, match="run deploy again first"):
        orch.service.act(orch.caller(), "core", K.PROVISION)

    # running deploy again is the retry
    retry = orch.wait(orch.service.act(orch.caller(), "core", K.DEPLOY).id)
    assert retry.state == OperationState.SUCCEEDED, retry.error
    instance = orch.store.get_instance(instance.id)
    assert instance.state == InstanceState.DEPLOYED
    assert instance.stack_state == "CREATE_COMPLETE"
    assert instance.failed_operation_id is None
    assert all(u.state == UnitState.RUNNING for u in orch.store.units(instance.id))


def test_a_failure_while_starting_a_unit_names_the_unit_step(orch: Orchestrator):
    orch.driver.fail("ensure_unit", "could not write kamailio.cfg", unit="scscf-1")
    instance, op = deploy_new(orch)
    assert op.state == OperationState.FAILED
    assert op.error.step == "start scscf-1"
    assert op.error.message == "could not write kamailio.cfg"
    assert orch.service.get(orch.caller(), "core").stack_state == "CREATE_FAILED"
    retry = orch.wait(orch.service.act(orch.caller(), "core", K.DEPLOY).id)
    assert retry.state == OperationState.SUCCEEDED, retry.error
    units = orch.store.units(instance.id)
    assert sorted(u.name for u in units) == ["dns-1", "pcscf-1", "scscf-1"]  # no duplicate reserved
    assert all(u.state == UnitState.RUNNING for u in units)


def test_a_retry_after_a_unit_failed_its_probe_makes_it_ready(orch: Orchestrator):
    orch.driver.fail("wait_ready", "scscf-1 did not answer its sip-options probe in time", unit="scscf-1")
    instance, op = deploy_new(orch)
    assert op.state == OperationState.FAILED and op.error.step == "start scscf-1"
    retry = orch.wait(orch.service.act(orch.caller(), "core", K.DEPLOY).id)
    assert retry.state == OperationState.SUCCEEDED
    units = {u.name: u for u in orch.store.units(instance.id)}
    assert units["scscf-1"].state == UnitState.RUNNING
    assert dispatcher(orch, instance.id) == [units["scscf-1"].address]


# --- scaling ---------------------------------------------------------------------------------------------


def test_scale_out_and_in_starts_then_drains_and_stops_highest_first(orch: Orchestrator):
    instance, op = deploy_new(orch)
    assert op.state == OperationState.SUCCEEDED
    driver = orch.driver
    driver.calls.clear()

    out = orch.wait(orch.service.scale(orch.caller(), "core", {"scscf": 3}).id)
    assert out.state == OperationState.SUCCEEDED, out.error
    assert out.kind == K.SCALE
    assert driver.units_called("ensure_unit") == ["scscf-2", "scscf-3"]
    assert driver.called("stop_unit") == []
    units = {u.name: u for u in orch.store.units(instance.id)}
    assert sorted(units) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2", "scscf-3"]
    assert all(u.state == UnitState.RUNNING for u in units.values())
    assert dispatcher(orch, instance.id) == [units[f"scscf-{i}"].address for i in (1, 2, 3)]
    inst = orch.store.get_instance(instance.id)
    assert inst.sizes["scscf"] == 3
    assert inst.state == InstanceState.DEPLOYED and inst.stack_state == "UPDATE_COMPLETE"

    driver.calls.clear()
    back = orch.wait(orch.service.scale(orch.caller(), "core", {"scscf": 1}).id)
    assert back.state == OperationState.SUCCEEDED, back.error
    assert driver.units_called("ensure_unit") == []
    assert driver.units_called("wait_drained") == ["scscf-3", "scscf-2"]
    assert driver.units_called("stop_unit") == ["scscf-3", "scscf-2"]
    # drained before stopped, and each left the P-CSCF's dispatcher set before its stop
    calls = driver.calls
    for name in ("scscf-3", "scscf-2"):
        stop = next(i for i, c in enumerate(calls) if c.method == "stop_unit" and c.unit == name)
        drain = next(i for i, c in enumerate(calls) if c.method == "wait_drained" and c.unit == name)
        assert drain < stop
        routing = [c for c in calls[:drain] if c.method == "apply_files" and c.unit == "pcscf-1"]
        assert routing, f"the P-CSCF's routing was not pushed before {name} was drained"
        assert units[name].address not in routing[-1].data["files"]["dispatcher.list"]
    # the S-CSCF that stays forgets each one that left their DMQ group
    forgets = [(c.unit, c.data["params"]) for c in calls if c.method == "call" and c.data["method"] == "dmq.remove"]
    assert forgets == [
        ("scscf-1", [f"sip:{units['scscf-3'].address}:5060"]),
        ("scscf-1", [f"sip:{units['scscf-2'].address}:5060"]),
    ]
    assert sorted(u.name for u in orch.store.units(instance.id)) == ["dns-1", "pcscf-1", "scscf-1"]
    assert dispatcher(orch, instance.id) == [units["scscf-1"].address]
    assert orch.store.get_instance(instance.id).sizes["scscf"] == 1


def test_scale_beyond_the_profile_bounds_is_refused(orch: Orchestrator):
    deploy_new(orch)
    with pytest.raises(Exception, match="between 1 and 5"):
        orch.service.scale(orch.caller(), "core", {"scscf": 6})
    with pytest.raises(Exception, match="no role 'hss'"):
        orch.service.scale(orch.caller(), "core", {"hss": 1})


def test_an_update_before_deploy_leaves_the_instance_initialised(orch: Orchestrator):
    instance, _ = orch.service.create(orch.caller(), "core")
    op = orch.wait(orch.service.update(orch.caller(), "core", {"mcn.endpoint.maas": "160.85.4.50"}).id)
    assert op.state == OperationState.SUCCEEDED
    instance = orch.store.get_instance(instance.id)
    assert instance.attributes["mcn.endpoint.maas"] == "160.85.4.50"
    assert orch.store.units(instance.id) == []
    assert instance.state == InstanceState.INITIALISED
    assert instance.stack_state == "INIT_COMPLETE"
    orch.service.act(orch.caller(), "core", K.DEPLOY)  # still applicable


def test_update_of_a_deployed_instance_records_the_attribute(orch: Orchestrator):
    instance, _ = deploy_new(orch)
    op = orch.wait(orch.service.update(orch.caller(), "core", {"mcn.endpoint.maas": "160.85.4.50"}).id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert op.kind == K.UPDATE
    assert op.steps[-1].name == "attributes" and op.steps[-1].detail == "mcn.endpoint.maas=160.85.4.50"
    instance = orch.store.get_instance(instance.id)
    assert instance.attributes == {"mcn.endpoint.maas": "160.85.4.50"}
    assert instance.state == InstanceState.DEPLOYED and instance.stack_state == "UPDATE_COMPLETE"
    assert orch.driver.units_called("ensure_unit") == ["scscf-1", "pcscf-1", "dns-1"]  # nothing restarted


# --- one operation at a time -------------------------------------------------------------------------


def test_a_queued_operation_already_counts_as_current(tmp_path: Path):
    orch = Orchestrator(tmp_path)  # not started: what is submitted stays queued
    try:
        instance, op = orch.service.create(orch.caller(), "core", then=(K.DEPLOY,))
        with pytest.raises(Conflict) as err:
            orch.service.act(orch.caller(), "core", K.DEPLOY)
        assert op.id in err.value.message
    finally:
        orch.stop()


def test_any_operation_while_one_runs_is_a_conflict_naming_it(tmp_path: Path):
    orch = Orchestrator(tmp_path)
    entered, release = orch.driver.hold("wait_ready")
    orch.start()
    try:
        instance, op = orch.service.create(orch.caller(), "core", then=(K.DEPLOY,))
        assert entered.wait(5)
        attempts = [
            lambda: orch.service.update(orch.caller(), "core", {"mcn.endpoint.maas": "160.85.4.50"}),
            lambda: orch.service.act(orch.caller(), "core", K.DEPLOY),
            lambda: orch.service.act(orch.caller(), "core", K.PROVISION),
            lambda: orch.service.scale(orch.caller(), "core", {"scscf": 2}),
        ]  # a dispose is accepted at any time: see the tests under "dispose" below
        for attempt in attempts:
            with pytest.raises(Conflict) as err:
                attempt()
            assert op.id in err.value.message and "(deploy)" in err.value.message
            assert err.value.details == {"operation": op.id, "kind": "deploy"}
        release.set()
        assert orch.wait(op.id).state == OperationState.SUCCEEDED
        # the refused requests left no operation behind
        assert [o.kind for o in orch.store.operations(instance_id=instance.id)] == [K.DEPLOY]
    finally:
        release.set()
        orch.stop()


# --- restarts ---------------------------------------------------------------------------------------------


def crash_while_running(tmp_path: Path, attempts: int = 1):
    """An orchestrator that took a deploy, marked it running, and died before finishing it."""
    first = Orchestrator(tmp_path)  # never started: its queue dies with it
    instance, op = first.service.create(first.caller(), "core", then=(K.DEPLOY,))
    op = first.store.get_operation(op.id)
    op.state, op.attempts = OperationState.RUNNING, attempts
    first.store.save_operation(op)
    inst = first.store.get_instance(instance.id)
    inst.state, inst.stack_state = InstanceState.DEPLOYING, "CREATE_IN_PROGRESS"
    first.store.save_instance(inst)
    first.store.close()
    return instance, op


def test_an_operation_left_running_is_resumed_after_a_restart(tmp_path: Path):
    instance, op = crash_while_running(tmp_path)
    second = Orchestrator(tmp_path)
    second.start()
    try:
        done = second.wait(op.id)
        assert done.state == OperationState.SUCCEEDED, done.error
        assert "resumed after a restart of the orchestrator" in step_names(done)
        assert done.attempts == 2
        instance = second.store.get_instance(instance.id)
        assert instance.state == InstanceState.DEPLOYED and instance.stack_state == "CREATE_COMPLETE"
        assert all(u.state == UnitState.RUNNING for u in second.store.units(instance.id))
        assert any("resumed after a restart" in e.message for e in second.store.events(instance.id))
    finally:
        second.stop()


def test_a_resumed_operation_takes_the_instance_back_when_a_crash_released_it(tmp_path: Path):
    instance, op = crash_while_running(tmp_path)
    inst = Orchestrator(tmp_path).store.get_instance(instance.id)
    inst.current_operation_id = None  # died between _finish's two writes
    Orchestrator(tmp_path).store.save_instance(inst)
    second = Orchestrator(tmp_path)
    second.start()
    try:
        assert second.wait(op.id).state == OperationState.SUCCEEDED
        assert second.store.get_instance(instance.id).current_operation_id is None
    finally:
        second.stop()


def test_a_resumed_operation_whose_instance_moved_on_is_failed_not_run(tmp_path: Path):
    instance, op = crash_while_running(tmp_path)
    store = Orchestrator(tmp_path).store
    inst = store.get_instance(instance.id)
    inst.current_operation_id = "another-operation"
    store.save_instance(inst)
    second = Orchestrator(tmp_path)
    second.start()
    try:
        done = second.wait(op.id)
        assert done.state == OperationState.FAILED and done.error.step == "resume"
        assert "another-operation" in done.error.message
        assert second.driver.called("ensure_unit") == []
    finally:
        second.stop()


def test_an_operation_interrupted_too_often_is_failed_with_the_reason(tmp_path: Path):
    instance, op = crash_while_running(tmp_path, attempts=MAX_ATTEMPTS)
    second = Orchestrator(tmp_path)
    second.start()
    try:
        done = second.wait(op.id)
        assert done.state == OperationState.FAILED
        assert done.error.step == "resume"
        assert done.error.message == f"interrupted {MAX_ATTEMPTS} times by restarts of the orchestrator"
        instance = second.store.get_instance(instance.id)
        assert instance.state == InstanceState.FAILED
        assert instance.failed_operation_id == op.id and instance.current_operation_id is None
        assert second.driver.called("ensure_unit") == []  # nothing started for a failed operation
        # not forgotten: a deploy now is the retry
        retry = second.wait(second.service.act(second.caller(), "core", K.DEPLOY).id)
        assert retry.state == OperationState.SUCCEEDED, retry.error
    finally:
        second.stop()


def test_a_queued_operation_is_run_after_a_restart(tmp_path: Path):
    first = Orchestrator(tmp_path)
    instance, op = first.service.create(first.caller(), "core", then=(K.DEPLOY, K.PROVISION))
    first.store.close()
    second = Orchestrator(tmp_path)
    second.start()
    try:
        last = second.wait_chain(op.id)
        assert last.kind == K.PROVISION and last.state == OperationState.SUCCEEDED, last.error
        assert "resumed after a restart of the orchestrator" not in step_names(second.store.get_operation(op.id))
        assert second.store.get_instance(instance.id).state == InstanceState.ACTIVE
    finally:
        second.stop()


# --- dispose ------------------------------------------------------------------------------------------------


def test_dispose_removes_units_and_subscribers_and_frees_the_name(orch: Orchestrator):
    instance, op = deploy_new(orch, then=(K.DEPLOY, K.PROVISION))
    assert op.state == OperationState.SUCCEEDED
    assert orch.store.subscribers(instance.id)
    gone = orch.wait(orch.service.dispose(orch.caller(), "core").id)
    assert gone.state == OperationState.SUCCEEDED, gone.error
    assert step_names(gone) == ["remove units", "remove subscribers"]

    disposed = orch.store.get_instance(instance.id)
    assert disposed.state == InstanceState.DISPOSED
    assert disposed.stack_state == "DELETE_COMPLETE"
    assert orch.store.units(instance.id) == []
    assert orch.store.subscribers(instance.id) == []
    assert sorted(orch.driver.called("dispose")[0].data["units"]) == ["dns-1", "pcscf-1", "scscf-1"]
    assert not any(key[0] == instance.id for key in orch.driver.alive)
    with pytest.raises(NotFound):
        orch.service.get(orch.caller(), "core")
    with pytest.raises(NotFound):
        orch.service.get(orch.caller(), instance.id)
    assert orch.service.list(orch.caller()) == []

    again, op2 = deploy_new(orch)
    assert again.id != instance.id
    assert op2.state == OperationState.SUCCEEDED
    assert orch.service.get(orch.caller(), "core").id == again.id


def test_dispose_of_an_instance_never_deployed(orch: Orchestrator):
    instance, _ = orch.service.create(orch.caller(), "core")
    done = orch.wait(orch.service.dispose(orch.caller(), "core").id)
    assert done.state == OperationState.SUCCEEDED
    assert orch.store.get_instance(instance.id).state == InstanceState.DISPOSED
    assert orch.driver.called("ensure_unit") == []
    with pytest.raises(NotFound):
        orch.service.act(orch.caller(), instance.id, K.DEPLOY)


# --- dispose at any time ----------------------------------------------------------------------------------


def events_of(orch: Orchestrator, instance_id: str) -> list[str]:
    return [e.message for e in orch.store.events(instance_id)]


def test_dispose_while_a_deploy_runs_cancels_it_and_removes_what_it_started(tmp_path: Path):
    orch = Orchestrator(tmp_path)
    entered, release = orch.driver.hold("wait_ready")
    orch.start()
    try:
        instance, deploy = orch.service.create(orch.caller(), "core", then=(K.DEPLOY, K.PROVISION))
        assert entered.wait(5)  # scscf-1 is being started
        dispose = orch.service.dispose(orch.caller(), "core")
        assert dispose.kind == K.DISPOSE and dispose.state == OperationState.QUEUED
        assert dispose.params == {"cancels": deploy.id}
        assert orch.store.get_instance(instance.id).current_operation_id == deploy.id  # queued behind it
        assert orch.service.dispose(orch.caller(), "core").id == dispose.id  # the same request again
        with pytest.raises(Conflict) as err:
            orch.service.scale(orch.caller(), "core", {"scscf": 2})
        assert dispose.id in err.value.message and "being disposed of" in err.value.message
        assert err.value.details == {"operation": dispose.id, "kind": "dispose"}
        release.set()

        done = orch.wait(dispose.id)
        assert done.state == OperationState.SUCCEEDED, done.error
        cancelled = orch.store.get_operation(deploy.id)
        assert cancelled.state == OperationState.FAILED
        assert cancelled.error.step == "cancelled"
        assert cancelled.error.message == f"cancelled by dispose {dispose.id}"
        assert cancelled.steps[-1].name == "cancelled" and "followed_by" not in cancelled.params
        # the unit being started when the dispose came, and those only reserved, are all removed
        assert orch.driver.called("ensure_unit")[0].unit == "scscf-1"
        assert sorted(orch.driver.called("dispose")[0].data["units"]) == ["dns-1", "pcscf-1", "scscf-1"]
        assert not any(key[0] == instance.id for key in orch.driver.alive)
        assert orch.store.units(instance.id) == []
        assert orch.store.get_instance(instance.id).state == InstanceState.DISPOSED
        assert [o.kind for o in orch.store.operations(instance_id=instance.id)] == [K.DEPLOY, K.DISPOSE]
        messages = events_of(orch, instance.id)
        assert f"provision after deploy dropped: dispose {dispose.id} was requested" in messages
        assert any(m.startswith("deploy cancelled before step ") for m in messages)
    finally:
        release.set()
        orch.stop()


def test_a_second_dispose_while_one_runs_answers_with_it(tmp_path: Path):
    orch = Orchestrator(tmp_path)
    entered, release = orch.driver.hold("dispose")
    orch.start()
    try:
        instance, _ = deploy_new(orch)
        first = orch.service.dispose(orch.caller(), "core")
        assert entered.wait(5)
        assert orch.store.get_instance(instance.id).state == InstanceState.DISPOSING
        again = orch.service.dispose(orch.caller(), instance.id)
        assert again.id == first.id and again.state == OperationState.RUNNING
        release.set()
        assert orch.wait(first.id).state == OperationState.SUCCEEDED
        assert [o.kind for o in orch.store.operations(instance_id=instance.id)] == [K.DEPLOY, K.DISPOSE]
        with pytest.raises(NotFound):  # disposed: nothing left to dispose of
            orch.service.dispose(orch.caller(), instance.id)
    finally:
        release.set()
        orch.stop()


@pytest.mark.parametrize("interrupted", ["queued", "running"])
def test_a_dispose_waiting_for_an_operation_runs_after_a_restart(tmp_path: Path, interrupted: str):
    if interrupted == "running":
        instance, deploy = crash_while_running(tmp_path)
    else:
        first = Orchestrator(tmp_path)
        instance, deploy = first.service.create(first.caller(), "core", then=(K.DEPLOY, K.PROVISION))
        first.store.close()
    before = Orchestrator(tmp_path)  # not started: the dispose is recorded, then the process dies
    dispose = before.service.dispose(before.caller(), "core")
    assert dispose.state == OperationState.QUEUED
    before.store.close()
    second = Orchestrator(tmp_path)
    second.start()
    try:
        assert second.wait(dispose.id).state == OperationState.SUCCEEDED
        cancelled = second.store.get_operation(deploy.id)
        assert cancelled.state == OperationState.FAILED and cancelled.error.step == "cancelled"
        assert "its first step" in cancelled.steps[-1].detail
        assert second.driver.called("ensure_unit") == []  # the deploy did not start anything first
        assert second.store.get_instance(instance.id).state == InstanceState.DISPOSED
        assert [o.kind for o in second.store.operations(instance_id=instance.id)] == [K.DEPLOY, K.DISPOSE]
    finally:
        second.stop()


def test_a_dispose_queued_as_an_operation_ends_comes_before_its_follow_up(tmp_path: Path):
    """The dispose came after the deploy's last step boundary: the deploy ends, the dispose runs
    next, the provision chained after the deploy is dropped (one transaction decides)."""
    orch = Orchestrator(tmp_path)  # not started: the test plays the worker
    try:
        instance, deploy = orch.service.create(orch.caller(), "core", then=(K.DEPLOY, K.PROVISION))
        dispose = orch.service.dispose(orch.caller(), "core")
        deploy = orch.store.get_operation(deploy.id)
        orch.engine._finish(deploy, orch.store.get_instance(instance.id), None)
        assert orch.store.get_operation(deploy.id).state == OperationState.SUCCEEDED
        assert "followed_by" not in orch.store.get_operation(deploy.id).params
        assert orch.store.get_instance(instance.id).current_operation_id == dispose.id
        assert [o.kind for o in orch.store.operations(instance_id=instance.id)] == [K.DEPLOY, K.DISPOSE]
        messages = events_of(orch, instance.id)
        assert f"provision after deploy dropped: dispose {dispose.id} was requested" in messages
        assert "provision requested after deploy" not in messages
    finally:
        orch.stop()


def test_nothing_else_starts_while_a_dispose_waits(tmp_path: Path):
    from imsso.engine.runtime import Runtime

    orch = Orchestrator(tmp_path)
    entered, release = orch.driver.hold("check_service")
    orch.start()
    try:
        instance, provision = orch.service.create(orch.caller(), "core", then=(K.DEPLOY, K.PROVISION))
        assert entered.wait(5)  # the provision's last step
        stale = orch.store.get_instance(instance.id)
        stale.state, stale.current_operation_id = InstanceState.ACTIVE, None  # as seen a moment ago
        dispose = orch.service.dispose(orch.caller(), "core")
        for kind, params in ((K.HEAL, {"units": ["scscf-1"]}), (K.SCALE, {"sizes": {"scscf": 2}})):
            with pytest.raises(Conflict) as err:
                orch.engine.request(stale, kind, params)
            assert err.value.details == {"operation": dispose.id, "kind": "dispose"}
        unit = next(u for u in orch.store.units(instance.id) if u.name == "scscf-1")
        unit.state = UnitState.FAILED
        orch.store.save_unit(unit)
        loop = Runtime(orch.store, orch.engine.request, [], lambda i, u: False)
        loop.tick()
        assert sorted(o.kind for o in orch.store.operations(instance_id=instance.id)) == sorted(
            [K.DEPLOY, K.PROVISION, K.DISPOSE]
        )
        release.set()
        assert orch.wait(dispose.id).state == OperationState.SUCCEEDED
    finally:
        release.set()
        orch.stop()


# --- tenants ----------------------------------------------------------------------------------------------


def test_a_tenant_sees_only_its_own_instances(orch: Orchestrator):
    instance, _ = orch.service.create(orch.caller("acme"), "core")
    other = orch.caller("globex")
    for ref in ("core", instance.id):
        with pytest.raises(NotFound):
            orch.service.get(other, ref)
    assert orch.service.list(other) == []
    op = orch.service.act(orch.caller("acme"), "core", K.DEPLOY)
    with pytest.raises(NotFound):
        orch.service.operation(other, op.id)
    # the same name in another tenant is another instance
    theirs, _ = orch.service.create(other, "core")
    assert theirs.id != instance.id
    orch.wait(op.id)


def test_a_name_is_unique_among_a_tenants_live_instances(orch: Orchestrator):
    orch.service.create(orch.caller(), "core")
    with pytest.raises(Conflict, match="already exists"):
        orch.service.create(orch.caller(), "core")
    with pytest.raises(Exception, match="lowercase"):
        orch.service.create(orch.caller(), "Core_1")


def test_a_template_that_cannot_render_fails_the_operation_and_not_the_worker(tmp_path: Path):
    class NoPaths(FakeDriver):
        def layout(self, instance, unit_name):  # the templates need unit_dir and subscribers_db
            return {}

    orch = Orchestrator(tmp_path, driver=NoPaths(), workers=1)
    orch.start()
    try:
        instance, op = orch.service.create(orch.caller(), "core", then=(K.DEPLOY,))
        failed = orch.wait(op.id)
        assert failed.state == OperationState.FAILED
        assert failed.error.step == "preflight"
        assert failed.error.message.endswith("is undefined")  # never swallowed
        assert failed.error.cause == "UndefinedError"
        assert orch.store.get_instance(instance.id).state == InstanceState.FAILED
        # the one worker is still there for the next operation
        orch.driver.layout = FakeDriver.layout.__get__(orch.driver)
        retry = orch.wait(orch.service.act(orch.caller(), "core", K.DEPLOY).id)
        assert retry.state == OperationState.SUCCEEDED, retry.error
    finally:
        orch.stop()


def test_a_change_without_a_live_path_restarts_the_unit_and_records_it(orch: Orchestrator):
    instance, op = deploy_new(orch)
    before = {u.name: u for u in orch.store.units(instance.id)}
    # The S-CSCF's kamailio.cfg on the unit differs from the plan (e.g. the profile was edited).
    orch.driver.files[(instance.id, "scscf-1")]["kamailio.cfg"] = "# an older rendering\n"
    orch.driver.calls.clear()
    update = orch.wait(orch.service.update(orch.caller(), "core", {"mcn.endpoint.maas": "10.0.0.1"}).id)
    assert update.state == OperationState.SUCCEEDED, update.error
    assert orch.driver.units_called("stop_unit") == ["scscf-1"]
    assert orch.driver.units_called("wait_ready") == ["scscf-1"]
    after = {u.name: u for u in orch.store.units(instance.id)}
    assert after["scscf-1"].pid != before["scscf-1"].pid  # the store knows the new process
    assert after["scscf-1"].state == UnitState.RUNNING
    assert after["pcscf-1"].pid == before["pcscf-1"].pid
    assert any("restarted scscf-1 for kamailio.cfg" in s.detail for s in update.steps)


def test_a_subscriber_the_units_could_not_get_is_not_kept(orch: Orchestrator):
    deploy_new(orch)
    orch.service.put_subscriber(orch.caller(), "core", "carol", "carol-secret-1")
    orch.driver.fail("sync_subscribers", "disk full")
    with pytest.raises(Exception, match="disk full"):
        orch.service.put_subscriber(orch.caller(), "core", "dave", "dave-secret-1")
    orch.driver.fail("sync_subscribers", "disk full")
    with pytest.raises(Exception, match="disk full"):
        orch.service.put_subscriber(orch.caller(), "core", "carol", "a-new-password")
    instance = orch.store.find_instance("acme", "core")
    subs = {
        s.user: s.ha1 for s in orch.store.subscribers(instance.id) if s.user not in ("alice", "bob")
    }  # the test subscribers
    # dave not added, carol's password not changed
    assert subs == {"carol": ha1_pair("carol", instance.domain, "carol-secret-1")[0]}
    orch.driver.fail("sync_subscribers", "disk full")
    with pytest.raises(Exception, match="disk full"):
        orch.service.delete_subscriber(orch.caller(), "core", "carol")
    assert [s.user for s in orch.service.subscribers(orch.caller(), "core")] == ["alice", "bob", "carol"]


def test_the_last_decision_per_policy_is_shown_however_many_came_before(orch: Orchestrator):
    instance, _ = deploy_new(orch)
    for n in range(1200):
        orch.store.add_event(instance.id, "decision", f"scscf-in: no action {n}", {"policy": "scscf-in"})
    orch.store.add_event(instance.id, "decision", "heal: scscf-1 died: replacing scscf-1", {})
    shown = orch.service.decisions(orch.store.get_instance(instance.id))
    assert shown == {"scscf-in": "scscf-in: no action 1199", "heal": "heal: scscf-1 died: replacing scscf-1"}
