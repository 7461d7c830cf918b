"""What each operation does, step by step. Every handler is level-based: run again after a crash
or a failure, it picks up from what exists and converges on the instance's desired spec."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable

from .. import planning
from ..drivers import DriverError, PlanDriver, UnitDriver
from ..model import OperationKind, Subscriber, Unit, UnitState
from ..operations_table import TABLE
from ..planning import Plan, UnitPlan
from .run import Run

START_TIMEOUT = 20.0  # a Kamailio answers OPTIONS in well under a second; this is for slow machines
DRAIN_TIMEOUT = 10.0  # SIP transactions end within Timer F (32 s) at worst; ours are short
SERVICE_TIMEOUT = 15.0


def deploy(run: Run) -> None:
    _accept_spec(run)
    _test_subscribers(run)  # before the units start: a stack's servers boot with their table
    converge(run)


def provision(run: Run) -> None:
    _accept_spec(run)
    _test_subscribers(run)
    converge(run)
    with run.step("subscribers") as step, run.subscriber_lock:
        subs = run.store.subscribers(run.instance.id)
        run.driver.sync_subscribers(run.instance, run.profile, subs)
        step.detail = f"{len(subs)} subscriber(s) in the S-CSCFs' table"
    maas = run.instance.attributes.get("mcn.endpoint.maas")
    if maas:
        with run.step("monitoring target") as step:
            step.detail = f"mcn.endpoint.maas={maas} recorded as the instance's monitoring endpoint"
    with run.step("readiness through the P-CSCF", timeout=SERVICE_TIMEOUT) as step:
        plan = _plan(run, run.store.units(run.instance.id))
        probe_sub = subs[0] if subs else None
        step.detail = run.driver.check_service(run.instance, plan, probe_sub, step.deadline)


def update(run: Run) -> None:
    changed = _accept_spec(run)
    if _has_units(run):
        converge(run)  # only files whose rendering changed are pushed, each live where it can be
    with run.step("attributes") as step:
        step.detail = ", ".join(f"{k}={v}" for k, v in changed.items()) or "no change"


def scale(run: Run) -> None:
    _accept_spec(run)
    if _has_units(run):
        converge(run)


def heal(run: Run) -> None:
    """Replace units that died or stopped answering: stop what is left of them, start them again
    on their addresses; the routing and the peers follow as at any start."""
    names = set(run.op.params.get("units", []))
    with run.step(f"stop {', '.join(sorted(names))}") as step:
        for unit in run.store.units(run.instance.id):
            if unit.name in names:
                _unit_driver(run).stop_unit(run.instance, unit)
                unit.pid = unit.started_at = None
                unit.state = UnitState.PLANNED
                run.store.save_unit(unit)
        step.detail = run.op.params.get("reason", "")
    converge(run)


def dispose(run: Run) -> None:
    units = run.store.units(run.instance.id)
    with run.step("remove units") as step, run.subscriber_lock:
        step.detail = "; ".join(run.driver.dispose(run.instance, units))
        for unit in units:
            run.store.delete_unit(unit.id)
        if run.instance.outputs:
            run.instance.outputs = {}
            run.save_instance()
    with run.step("remove subscribers") as step:
        subs = run.store.subscribers(run.instance.id)
        for sub in subs:
            run.store.delete_subscriber(run.instance.id, sub.user, sub.domain)
        step.detail = f"{len(subs)} removed"


# Each kind's handler, as the operation table names it (a missing function fails at import).
HANDLERS: dict[OperationKind, Callable[[Run], None]] = {kind: globals()[row.handler] for kind, row in TABLE.items()}


def _accept_spec(run: Run) -> dict[str, object]:
    """Make the operation's requested spec the instance's desired spec; return what changed."""
    params, inst = run.op.params, run.instance
    changed: dict[str, object] = {}
    for role, count in params.get("sizes", {}).items():
        if inst.sizes.get(role) != count:
            changed[f"imsso.size.{role}"] = count
            inst.sizes[role] = count
    for name, value in params.get("attributes", {}).items():
        if inst.attributes.get(name) != value:
            changed[name] = value
            inst.attributes[name] = value
    if "test_subscribers" in params and params["test_subscribers"] != inst.test_subscribers:
        inst.test_subscribers = params["test_subscribers"]
        changed["imsso.test_subscribers"] = inst.test_subscribers
    if changed:
        run.save_instance()
    return changed


def _has_units(run: Run) -> bool:
    return bool(run.store.units(run.instance.id))


def _test_subscribers(run: Run) -> None:
    """The profile's test subscribers, once, when the instance wants them and has none."""
    if not run.instance.test_subscribers:
        return
    with run.subscriber_lock:
        if run.store.subscribers(run.instance.id):
            return
        with run.step("test subscribers") as step:
            for user in run.profile.test_subscribers:
                run.store.put_subscriber(
                    Subscriber(run.instance.id, user, run.instance.domain, secrets.token_urlsafe(12))
                )
            step.detail = ", ".join(run.profile.test_subscribers)


def converge(run: Run) -> None:
    """Make what runs match the desired sizes and configs, the way the driver realises plans."""
    if isinstance(run.driver, PlanDriver):
        converge_stack(run, run.driver)
    else:
        converge_units(run)


def converge_stack(run: Run, driver: PlanDriver) -> None:
    """One stack holds the instance: render it from the plan, create or update it, read its outputs.
    Heat changes only the resources whose properties changed."""
    keep, extra = _reserve(run)
    plan = planning.build(run.instance, run.profile, keep, driver.layout)
    with run.step("template") as step:
        request = driver.request(run.instance, run.profile, plan, run.store.subscribers(run.instance.id))
        step.detail = (
            f"stack {request.name}: {len(request.template['resources'])} resources for "
            f"{len(keep)} units; environment: "
            f"{', '.join(sorted(request.environment)) or 'none'}"
        )
    with run.step(f"stack {'update' if run.instance.stack_id else 'create'}") as step:
        started = time.monotonic()
        status = driver.apply(
            run.instance, request, lambda stack_id: _record_stack(run, stack_id), started + request.timeout_mins * 60
        )
        run.instance.outputs = status.outputs
        run.save_instance()
        step.detail = f"{status.name} ({status.id}) {status.status} in {time.monotonic() - started:.1f} s"
    for unit in keep:
        if unit.state != UnitState.RUNNING:
            unit.state, unit.detail = UnitState.RUNNING, f"server of stack {status.name}"
            run.store.save_unit(unit)
            run.event("unit", f"{unit.name} running at {unit.address}", {"unit": unit.name})
    for unit in extra:
        run.store.delete_unit(unit.id)
        run.event("unit", f"{unit.name} removed with the stack update", {"unit": unit.name})


def _record_stack(run: Run, stack_id: str) -> None:
    """Known as soon as Heat answers: a crash mid-create must find the stack again, not make two."""
    if run.instance.stack_id != stack_id:
        run.instance.stack_id = stack_id
        run.save_instance()


def _unit_driver(run: Run) -> UnitDriver:
    """The driver as the unit-by-unit shape, for the steps that only that shape has."""
    if not isinstance(run.driver, UnitDriver):
        raise DriverError(
            f"driver {run.driver.name} realises whole plans: it has no unit-by-unit '{run.op.kind.value}' path"
        )
    return run.driver


def converge_units(run: Run) -> None:
    """Make the running units match the desired sizes: reserve, start, route, drain, stop."""
    keep, extra = _reserve(run)
    with run.step("subscriber table"), run.subscriber_lock:
        # The S-CSCFs open this table at start: it must exist before they do.
        run.driver.sync_subscribers(run.instance, run.profile, run.store.subscribers(run.instance.id))
    # A unit counts as started once it answered its probe, not merely when its process lives.
    new = [u for u in keep if u.state != UnitState.RUNNING or not run.driver.is_alive(run.instance, u)]
    if new:
        with run.step("preflight") as step:
            _unit_driver(run).preflight(run.instance, _plan(run, keep), [u.name for u in new])
            step.detail = f"{len(new)} unit(s) to start"
    for unit in new:
        _start(run, unit, keep)
    for unit in sorted(extra, key=lambda u: -u.index):
        _remove(run, unit, [u for u in keep])
    _refresh(run, keep)


def _reserve(run: Run) -> tuple[list[Unit], list[Unit]]:
    """Units to keep (creating records for missing ones) and units beyond the desired sizes."""
    existing = run.store.units(run.instance.id)
    with run.step("reserve units") as step:
        reserved = planning.reserve_units(
            run.profile,
            run.instance.id,
            run.instance.sizes,
            existing,
            run.store.addresses_in_use(),
            lambda taken: run.driver.allocate_address(run.instance, taken),
            lambda: str(uuid.uuid4()),
        )
        for unit in reserved.added:
            run.store.add_unit(unit)
        keep, extra = reserved.keep, reserved.extra
        step.detail = ", ".join(f"{u.name}@{u.address}" for u in keep) + (
            f"; to remove: {', '.join(u.name for u in extra)}" if extra else ""
        )
    return keep, extra


def _plan(run: Run, units: list[Unit], exclude: tuple[str, ...] = ()) -> Plan:
    """The plan for `units`, routing to the routable ones that run (and are not excluded)."""
    routed = [u.name for u in units if u.state == UnitState.RUNNING and u.name not in exclude]
    return planning.build(run.instance, run.profile, units, run.driver.layout, in_routing=routed)


def _start(run: Run, unit: Unit, keep: list[Unit]) -> None:
    with run.step(f"start {unit.name}", timeout=START_TIMEOUT) as step:
        plan = _plan(run, keep)
        _unit_driver(run).ensure_unit(run.instance, unit, plan.unit(unit.name))
        unit.state = UnitState.STARTING
        run.store.save_unit(unit)
        started = time.monotonic()
        _unit_driver(run).wait_ready(run.instance, unit, plan.unit(unit.name), step.deadline)
        unit.state = UnitState.RUNNING
        run.store.save_unit(unit)
        step.detail = f"{unit.address} pid {unit.pid} ({unit.detail}), ready in {time.monotonic() - started:.2f} s"
        run.event("unit", f"{unit.name} running at {unit.address}", {"unit": unit.name, "pid": unit.pid})
    if run.profile.role(unit.role).routable:
        _route(run, keep)


def _route(run: Run, units: list[Unit], exclude: tuple[str, ...] = ()) -> None:
    """Push the routing (dispatcher set, DNS zone) to the units that hold it, live."""
    plan = _plan(run, units, exclude)
    with run.step("routing") as step:
        done = []
        for unit in units:
            if unit.state == UnitState.RUNNING and not run.profile.role(unit.role).routable:
                done += _push(run, unit, plan.unit(unit.name), units)
        step.detail = "; ".join(done) or "unchanged"
        step.detail += f" (S-CSCFs in routing: {', '.join(plan.in_routing) or 'none'})"


def _remove(run: Run, unit: Unit, keep: list[Unit]) -> None:
    with run.step(f"drain {unit.name}", timeout=DRAIN_TIMEOUT) as step:
        unit.state = UnitState.DRAINING
        run.store.save_unit(unit)
        if run.profile.role(unit.role).routable:
            _route(run, keep)  # `unit` is not in `keep`: it leaves the dispatcher set first
        seen = _unit_driver(run).wait_drained(run.instance, unit, step.deadline)
        step.detail = f"left routing; in flight at stop: {seen}"
    with run.step(f"stop {unit.name}") as step:
        _unit_driver(run).stop_unit(run.instance, unit)
        step.detail = _tell_peers(run, unit, keep)  # before the record goes: a failure is retried
        run.store.delete_unit(unit.id)
        run.event("unit", f"{unit.name} stopped and removed", {"unit": unit.name})


def _tell_peers(run: Run, gone: Unit, keep: list[Unit]) -> str:
    """Call the role's on_leave method on the units of the role that stay (e.g. dmq.remove)."""
    leave = run.profile.role(gone.role).on_leave
    if not leave:
        return ""
    params = [p.format(address=gone.address, name=gone.name) for p in leave.get("params", [])]
    peers = [u for u in keep if u.role == gone.role and u.state == UnitState.RUNNING]
    for peer in peers:
        run.driver.call(run.instance, peer, leave["rpc"], *params)
    return f"{leave['rpc']} {' '.join(params)} on {', '.join(p.name for p in peers) or 'no peer'}"


def _refresh(run: Run, keep: list[Unit]) -> None:
    """Bring every unit's files to the final plan (DNS zone, dispatcher set), live where possible."""
    plan = _plan(run, keep)
    with run.step("configure") as step:
        done = []
        for unit in keep:
            if unit.state == UnitState.RUNNING:
                done += _push(run, unit, plan.unit(unit.name), keep)
        step.detail = "; ".join(done) or "all units up to date"


def _push(run: Run, unit: Unit, unit_plan: UnitPlan, keep: list[Unit]) -> list[str]:
    """Apply changed files live where the profile says how; restart the unit for the others."""
    changed = _unit_driver(run).changed_files(run.instance, unit, unit_plan)
    if all(name in unit_plan.reload for name in changed):
        return _unit_driver(run).apply_files(run.instance, unit, unit_plan) if changed else []
    _unit_driver(run).stop_unit(run.instance, unit)
    unit.pid = unit.started_at = None
    unit.state = UnitState.PLANNED
    run.store.save_unit(unit)
    _start(run, unit, keep)
    return [f"restarted {unit.name} for {', '.join(changed)} (no live path)"]
