"""Fakes shared by the unit tests: an in-memory driver and an orchestrator assembled around it.

The fake driver implements `imsso.drivers.UnitDriver` without processes: it records every call, keeps
which units are "alive", can be told to fail at a method (optionally for one unit), and can hold a
method on an Event so a test sees an operation while it runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imsso.auth import LocalTokens
from imsso.config import Settings
from imsso.drivers import Capabilities, DriverError, PlanDriver, PlanRequest, PlanStatus, UnitDriver
from imsso.engine import Engine
from imsso.model import Instance, Operation, OperationState, Subscriber, Unit
from imsso.planning import Plan, UnitPlan
from imsso.profiles import Profile
from imsso.service import Caller, Service
from imsso.store import Store

FINISHED = (OperationState.SUCCEEDED, OperationState.FAILED)


@dataclass
class Call:
    method: str
    unit: str | None = None  # the unit's name, when the call is about one unit
    data: dict[str, Any] = field(default_factory=dict)


class FakeDriver(UnitDriver):
    """An in-memory UnitDriver: every call recorded in `calls`, in order."""

    capabilities = Capabilities(live_reload=True, heal=True, management=True, probe=True)

    def __init__(self, name: str = "local"):
        self.name = name
        self.calls: list[Call] = []
        self.alive: set[tuple[str, str]] = set()  # (instance id, unit name)
        self.files: dict[tuple[str, str], dict[str, str]] = {}
        self.subscribers: dict[str, list[str]] = {}  # instance id -> users last synced
        self._failures: list[dict[str, Any]] = []
        self._holds: dict[str, tuple[threading.Event, threading.Event]] = {}
        self._lock = threading.Lock()
        self._pid = 1000

    # test controls
    def fail(
        self, method: str, message: str, unit: str | None = None, times: int = 1, cause: str = "fake cause"
    ) -> None:
        """Make the next `times` calls of `method` (for `unit`, if given) raise DriverError."""
        self._failures.append({"method": method, "unit": unit, "message": message, "times": times, "cause": cause})

    def hold(self, method: str) -> tuple[threading.Event, threading.Event]:
        """Make `method` wait until released; returns (entered, release)."""
        entered, release = threading.Event(), threading.Event()
        self._holds[method] = (entered, release)
        return entered, release

    def release_all(self) -> None:
        for _, release in self._holds.values():
            release.set()

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def units_called(self, method: str) -> list[str | None]:
        return [c.unit for c in self.called(method)]

    # the Driver protocol
    def allocate_address(self, instance: Instance, taken: set[str]) -> str:
        self._record("allocate_address")
        for host in range(2, 255):
            address = f"127.200.{instance.block}.{host}"
            if address not in taken:
                return address
        raise DriverError(f"no free address for {instance.name}")

    def layout(self, instance: Instance, unit_name: str) -> dict[str, str]:
        return {
            "unit_dir": f"/fake/{instance.id}/units/{unit_name}",
            "subscribers_db": f"/fake/{instance.id}/subscribers.sqlite",
            "dns_port": "53",
            "internal_net": "127.200.0.0/24",
            "manager_address": "127.0.0.1",
        }

    def preflight(self, instance: Instance, plan: Plan, new_units: list[str]) -> None:
        self._record("preflight", data={"new_units": list(new_units)})

    def ensure_unit(self, instance: Instance, unit: Unit, plan: UnitPlan) -> Unit:
        self._record("ensure_unit", unit)
        with self._lock:
            key = (instance.id, unit.name)
            if key not in self.alive:
                self._pid += 1
                unit.pid, unit.started_at = self._pid, time.time()
                unit.detail = "started"
                self.alive.add(key)
            self.files[key] = dict(plan.files)
        return unit

    def wait_ready(self, instance: Instance, unit: Unit, plan: UnitPlan, deadline: float) -> None:
        self._record("wait_ready", unit)

    def changed_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        key = (instance.id, unit.name)
        return sorted(n for n, c in plan.files.items() if self.files.get(key, {}).get(n) != c)

    def apply_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        self._record("apply_files", unit, {"files": dict(plan.files)})
        key = (instance.id, unit.name)
        changed = sorted(n for n, c in plan.files.items() if self.files.get(key, {}).get(n) != c)
        self.files[key] = dict(plan.files)
        return [f"{name} applied to {unit.name}" for name in changed]

    def wait_drained(self, instance: Instance, unit: Unit, deadline: float) -> dict[str, float]:
        self._record("wait_drained", unit)
        return {"transactions": 0.0}

    def call(self, instance: Instance, unit: Unit, method: str, *params: str) -> object:
        self._record("call", unit, {"method": method, "params": list(params)})
        return None

    def stop_unit(self, instance: Instance, unit: Unit) -> None:
        self._record("stop_unit", unit)
        self.alive.discard((instance.id, unit.name))
        self.files.pop((instance.id, unit.name), None)

    def is_alive(self, instance: Instance, unit: Unit) -> bool:
        return (instance.id, unit.name) in self.alive

    def answers(self, instance: Instance, unit: Unit, probe: str) -> bool:
        return self.is_alive(instance, unit)

    def sync_subscribers(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]) -> None:
        users = [s.user for s in subscribers]
        self._record("sync_subscribers", data={"users": users})
        self.subscribers[instance.id] = users

    def check_service(self, instance: Instance, plan: Plan, subscriber: Subscriber | None, deadline: float) -> str:
        self._record("check_service", data={"user": subscriber.user if subscriber else None})
        return f"REGISTER through {plan.role_units(plan.entry)[0].address}: 200 OK"

    def dispose(self, instance: Instance, units: list[Unit]) -> list[str]:
        self._record("dispose", data={"units": [u.name for u in units]})
        for key in [k for k in self.alive if k[0] == instance.id]:
            self.alive.discard(key)
            self.files.pop(key, None)
        self.subscribers.pop(instance.id, None)
        return [f"stopped {u.name}" for u in units]

    # internals
    def _record(self, method: str, unit: Unit | None = None, data: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.calls.append(Call(method, unit.name if unit else None, data or {}))
        hold = self._holds.get(method)
        if hold is not None:
            entered, release = hold
            entered.set()
            if not release.wait(10):
                raise DriverError(f"{method} was held for 10 s and never released by the test")
        for failure in self._failures:
            if (
                failure["method"] == method
                and failure["times"] > 0
                and (failure["unit"] is None or (unit is not None and failure["unit"] == unit.name))
            ):
                failure["times"] -= 1
                raise DriverError(failure["message"], failure["cause"])


class FakePlanDriver(PlanDriver):
    """An in-memory PlanDriver: the whole plan handed over at once, each request kept in `applied`."""

    option_prefix = "imsso.fake."
    create_only = frozenset({"imsso.fake.network"})
    capabilities = Capabilities(preview=True)
    plan_noun = "fake plans"

    def __init__(self, name: str = "fakeplan"):
        self.name = name
        self.applied: list[PlanRequest] = []
        self.disposed: list[str] = []

    def check_options(self, instance: Instance) -> None:
        for key in instance.attributes:
            if key.startswith(self.option_prefix) and key not in self.create_only:
                raise DriverError(f"unknown option {key}")

    def allocate_address(self, instance: Instance, taken: set[str]) -> str:
        return next(f"10.0.{instance.block}.{h}" for h in range(10, 255) if f"10.0.{instance.block}.{h}" not in taken)

    def layout(self, instance: Instance, unit_name: str) -> dict[str, str]:
        return {
            "unit_dir": f"/etc/fake/{unit_name}",
            "subscribers_db": "/var/fake/subscribers.sqlite",
            "hss_subscribers": "/var/fake/hss.json",
            "dns_port": "53",
            "internal_net": "10.0.0.0/24",
            "manager_address": "127.0.0.1",
        }

    def request(self, instance: Instance, profile: Profile, plan: Plan, subscribers: list[Subscriber]) -> PlanRequest:
        return PlanRequest(
            name=f"fake-{instance.name}",
            template={"resources": {u.name: u.address for u in plan.units}, "outputs": {}},
            timeout_mins=1,
        )

    def apply(
        self, instance: Instance, request: PlanRequest, record_id: Callable[[str], None], deadline: float
    ) -> PlanStatus:
        record_id(f"plan-{instance.id[:4]}")
        self.applied.append(request)
        return PlanStatus(
            id=f"plan-{instance.id[:4]}",
            name=request.name,
            status="COMPLETE",
            reason="",
            outputs={f"mcn.endpoint.{n}": a for n, a in request.template["resources"].items()},
        )

    def preview(self, instance: Instance, request: PlanRequest) -> dict[str, Any]:
        return {"action": "update" if instance.stack_id else "create"}

    def sync_subscribers(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]) -> None:
        """Subscribers travel with the plan."""

    def check_service(self, instance: Instance, plan: Plan, subscriber: Subscriber | None, deadline: float) -> str:
        return f"{len(plan.units)} units reported ready"

    def is_alive(self, instance: Instance, unit: Unit) -> bool:
        return True

    def answers(self, instance: Instance, unit: Unit, probe: str) -> bool:
        return True

    def dispose(self, instance: Instance, units: list[Unit]) -> list[str]:
        self.disposed.append(instance.stack_id)
        return [f"deleted {instance.stack_id}"]


class Orchestrator:
    """What `imsso.server.Orchestrator` assembles, around a FakeDriver and a SQLite file."""

    def __init__(
        self,
        data_dir: Path,
        driver: FakeDriver | None = None,
        workers: int = 2,
        engine_factory: Callable[..., Engine] = Engine,
        database_url: str | None = None,
    ):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            data_dir=data_dir, workers=workers, database_url=database_url or f"sqlite:///{data_dir / 'imsso.sqlite'}"
        )
        self.store = Store(self.settings.database_url)
        self.store.migrate()
        self.driver = driver or FakeDriver()
        self.drivers = {"local": self.driver}
        self.engine = engine_factory(self.store, self.drivers, self.settings)
        self.local_tokens = LocalTokens(self.store, data_dir / "admin.token", self.settings.token_ttl)
        self.service = Service(self.store, self.engine, self.drivers, self.settings, self.local_tokens)

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.driver.release_all()
        self.engine.stop()
        self.store.close()

    def token(self, tenant: str) -> str:
        token, _ = self.local_tokens.issue(self.local_tokens.admin_token(), tenant)
        return token

    def caller(self, tenant: str = "acme") -> Caller:
        return Caller(tenant)

    def wait(self, op_id: str, timeout: float = 10.0) -> Operation:
        """The operation once finished (succeeded or failed); fails the test at the deadline."""
        return wait_operation(self.store, op_id, timeout)

    def wait_chain(self, op_id: str, timeout: float = 10.0) -> Operation:
        """Follow `followed_by` from `op_id` to the last operation of the chain, finished."""
        deadline = time.monotonic() + timeout
        op = wait_operation(self.store, op_id, timeout)
        while op.state == OperationState.SUCCEEDED and op.params.get("followed_by"):
            op = wait_operation(self.store, op.params["followed_by"], max(0.1, deadline - time.monotonic()))
        return op


def wait_operation(store: Store, op_id: str, timeout: float = 10.0) -> Operation:
    deadline = time.monotonic() + timeout
    while True:
        op = store.get_operation(op_id)
        if op.state in FINISHED:
            return op
        if time.monotonic() > deadline:
            raise AssertionError(
                f"operation {op_id} ({op.kind.value}) still {op.state.value} after "
                f"{timeout} s; steps: {[s.name for s in op.steps]}"
            )
        time.sleep(0.01)
