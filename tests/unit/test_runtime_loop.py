"""The runtime loop (imsso.engine.runtime) on a real SQLite store, with a fake clock, a fake metric
source, fake probes and a fake `request` that starts operations in the store as the engine would."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from imsso.engine import runtime as rt
from imsso.engine.runtime import HEAL_AFTER, HEAL_BACKOFF, HEAL_HORIZON, HEAL_LIMIT, Runtime
from imsso.model import Conflict, Instance, InstanceState, Operation, OperationKind, OperationState, Unit, UnitState
from imsso.store import Store

K = OperationKind
HIGH, NORMAL, LOW = 10.0, 3.0, 1.0  # REGISTERs per second per S-CSCF, against the policies below
POLICIES = {
    "imsso.policy.scscf-out.above": 5,
    "imsso.policy.scscf-out.window": 3,
    "imsso.policy.scscf-out.cooldown": 5,
    "imsso.policy.scscf-in.below": 2,
    "imsso.policy.scscf-in.window": 3,
    "imsso.policy.scscf-in.cooldown": 5,
}


class Source:
    """sip.registers counters of the units it was given a rate for, advanced at each tick."""

    name = "fake"

    def __init__(self):
        self.counters: dict[str, float] = {}

    def advance(self, rate: float | None, seconds: float) -> None:
        if rate is not None:
            for unit in self.counters:
                self.counters[unit] += rate * seconds

    def sample(self, instance: Instance, units: list[Unit]) -> dict[str, dict[str, float]]:
        return {u.name: {"sip.registers": self.counters[u.name]} for u in units if u.name in self.counters}


class Rig:
    def __init__(self, store: Store):
        self.store = store
        self.now = 1000.0
        self.source = Source()
        self.silent: set[str] = set()  # units that do not answer their probe
        self.busy: str | None = None  # request raises Conflict with this
        self.requests: list[tuple[K, dict[str, Any]]] = []
        self.told: list[tuple[str, str]] = []
        self.runtime = Runtime(
            store,
            self.request,
            [self.source],
            self.answers,
            interval=1.0,
            on_decision=lambda p, a: self.told.append((p, a)),
            clock=lambda: self.now,
        )
        self.instance = self.add_instance()

    # the fakes
    def request(self, instance: Instance, kind: K, params: dict[str, Any]) -> Operation:
        if self.busy:
            raise Conflict(self.busy)
        op = Operation(id=str(uuid.uuid4()), instance_id=instance.id, kind=kind, params=params)
        self.store.start_operation(op)  # the instance is now busy, as with the engine
        self.requests.append((kind, params))
        return op

    def answers(self, instance: Instance, unit: Unit) -> bool:
        return unit.name not in self.silent

    # the world
    def add_instance(
        self,
        name: str = "core",
        scscf: int = 1,
        attributes: dict | None = None,
        state: InstanceState = InstanceState.ACTIVE,
    ) -> Instance:
        inst = Instance(
            id=str(uuid.uuid4()),
            tenant="acme",
            name=name,
            profile="sip-core",
            driver="local",
            domain="ims.test",
            sizes={"scscf": scscf, "pcscf": 1, "dns": 1},
            attributes=dict(POLICIES if attributes is None else attributes),
            state=state,
        )
        self.store.create_instance(inst)
        for role, count in inst.sizes.items():
            for i in range(1, count + 1):
                self.add_unit(inst, role, i)
        return self.store.get_instance(inst.id)

    def add_unit(self, inst: Instance, role: str, index: int) -> None:
        name = f"{role}-{index}"
        self.store.add_unit(
            Unit(
                id=str(uuid.uuid4()),
                instance_id=inst.id,
                name=name,
                role=role,
                index=index,
                address=f"127.200.{inst.block}.{len(self.store.units(inst.id)) + 2}",
                state=UnitState.RUNNING,
                pid=4000 + index,
            )
        )
        if role == "scscf":
            self.source.counters[name] = 0.0

    def unit(self, name: str) -> Unit:
        return next(u for u in self.store.units(self.instance.id) if u.name == name)

    def set_unit(self, name: str, state: UnitState) -> None:
        u = self.unit(name)
        u.state = state
        self.store.save_unit(u)

    def resize(self, scscf: int) -> None:
        """A scale finished (the runtime's or a user's): new size and units in the store."""
        inst = self.store.get_instance(self.instance.id)
        for i in range(inst.sizes["scscf"] + 1, scscf + 1):
            self.add_unit(inst, "scscf", i)
        inst.sizes = {**inst.sizes, "scscf": scscf}
        self.store.save_instance(inst)

    def finish(self) -> None:
        """The current operation ends (succeeded): the instance is free again."""
        inst = self.store.get_instance(self.instance.id)
        op = self.store.get_operation(inst.current_operation_id)
        op.state = OperationState.SUCCEEDED
        self.store.finish_operation(op, inst, [], None)

    # driving
    def tick(self, rate: float | None = None, times: int = 1) -> None:
        """`times` ticks one interval apart; the S-CSCFs take `rate` REGISTERs per second."""
        for _ in range(times):
            self.source.advance(rate, self.runtime.interval)
            self.runtime.tick()
            self.now += self.runtime.interval

    def decisions(self, instance_id: str | None = None) -> list:
        return self.store.events(instance_id or self.instance.id, kind="decision")

    def messages(self) -> list[str]:
        return [e.message for e in self.decisions()]

    def scales(self) -> list[dict[str, Any]]:
        return [p for k, p in self.requests if k == K.SCALE]

    def heals(self) -> list[dict[str, Any]]:
        return [p for k, p in self.requests if k == K.HEAL]


@pytest.fixture
def store(tmp_path: Path):
    s = Store(f"sqlite:///{tmp_path / 'imsso.db'}")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def rig(store: Store) -> Rig:
    return Rig(store)


# --- scaling ---------------------------------------------------------------------------------------


def test_load_above_the_threshold_for_the_window_starts_one_scale(rig: Rig):
    rig.tick(HIGH, times=5)  # window (3 s) covered at the 4th tick, cooldown since the first look (5 s)
    assert rig.scales() == []
    rig.tick(HIGH)
    assert rig.scales() == [{"sizes": {"scscf": 2}, "cause": "policy scscf-out"}]
    rig.tick(HIGH, times=10)  # the scale runs: nothing more is asked meanwhile
    assert len(rig.scales()) == 1

    scale = [e for e in rig.decisions() if "operation" in e.data]
    assert len(scale) == 1
    data = scale[0].data
    assert data["operation"] == rig.store.get_instance(rig.instance.id).current_operation_id
    assert (data["policy"], data["metric"], data["threshold"]) == ("scscf-out", "sip.registers_rate", 5)
    assert (data["value"], data["values"]) == (HIGH, {"scscf-1": HIGH})
    assert (data["size"], data["target"], data["action"]) == (1, 2, "scale")
    assert scale[0].message.startswith("scscf-out: scale, threshold crossed")
    assert scale[0].message.endswith("scscf 1 -> 2")


def test_cooldown_starts_at_the_first_look(rig: Rig):
    rig.resize(2)
    rig.tick(LOW, times=4)  # breach over the window, but the instance was only seen 3 s ago
    assert rig.scales() == []
    assert any(m.startswith("scscf-in: no action, in cooldown") for m in rig.messages())
    rig.tick(LOW, times=2)
    assert rig.scales() == [{"sizes": {"scscf": 1}, "cause": "policy scscf-in"}]


def test_cooldown_restarts_after_a_size_change(rig: Rig):
    rig.tick(NORMAL, times=10)  # well past the first look's cooldown
    rig.resize(2)  # a user's scale
    rig.tick(HIGH, times=5)  # the window is covered after 4 ticks; the cooldown (5 s) is not over
    assert rig.scales() == []
    assert "in cooldown" in rig.messages()[-1]
    rig.tick(HIGH)
    assert rig.scales() == [{"sizes": {"scscf": 3}, "cause": "policy scscf-out"}]


def test_after_its_own_scale_the_policy_waits_for_the_cooldown(rig: Rig):
    rig.tick(HIGH, times=6)
    rig.resize(2)
    rig.finish()
    rig.tick(HIGH, times=5)
    assert len(rig.scales()) == 1
    rig.tick(HIGH)
    assert rig.scales()[-1] == {"sizes": {"scscf": 3}, "cause": "policy scscf-out"}


def test_the_same_verdict_is_told_once_and_a_new_one_again(rig: Rig):
    rig.tick(NORMAL, times=20)
    rig.tick(NORMAL + 1, times=5)  # other figures, same verdict
    assert rig.messages() == [
        ("scscf-out: no action, within threshold: not avg sip.registers_rate > 5 for 3 s (3.0, 3.0, 3.0)"),
        ("scscf-in: no action, within threshold: not avg sip.registers_rate < 2 for 3 s (3.0, 3.0, 3.0)"),
    ]
    rig.tick(LOW, times=20)  # scale-in at the S-CSCF's min
    assert len(rig.messages()) == 3
    assert rig.messages()[-1].startswith("scscf-in: no action, at bound:")
    assert rig.messages()[-1].endswith("scscf already at its min 1")
    rig.tick(NORMAL, times=20)
    assert len(rig.messages()) == 4 and rig.messages()[-1].startswith("scscf-in: no action, within threshold")


def test_no_decision_is_told_while_waiting_for_the_window(rig: Rig):
    rig.tick(HIGH, times=3)
    assert rig.messages() == []


def test_a_busy_instance_is_told_and_the_scale_retried(rig: Rig):
    rig.busy = "operation 42 (update) is running on this instance"
    rig.tick(HIGH, times=10)
    assert rig.scales() == []
    busy = [m for m in rig.messages() if "not started" in m]
    assert busy == ["scscf-out: scale not started: operation 42 (update) is running on this instance"]
    rig.busy = None
    rig.tick(HIGH)
    assert rig.scales() == [{"sizes": {"scscf": 2}, "cause": "policy scscf-out"}]


def test_invalid_policy_overrides_are_told_not_applied(rig: Rig):
    bad = rig.store.get_instance(rig.instance.id)
    bad.attributes = {**bad.attributes, "imsso.policy.scscf-out.window": 0}
    rig.store.save_instance(bad)
    rig.tick(HIGH, times=10)
    assert rig.scales() == []
    assert rig.messages() == [
        ("policies not applied: policy scscf-out: window must be 0-3600 s and cooldown 0-86400 s")
    ]


def test_a_disabled_policy_does_not_scale(store: Store):
    rig = Rig(store)
    inst = store.get_instance(rig.instance.id)
    inst.attributes = {**inst.attributes, "imsso.policy.scscf-out.enabled": "false"}
    store.save_instance(inst)
    rig.tick(HIGH, times=10)
    assert rig.scales() == []
    assert "scscf-out: no action, disabled" in rig.messages()


def test_scaling_bounds_of_the_instance_hold_the_scale(store: Store):
    rig = Rig(store)
    inst = store.get_instance(rig.instance.id)
    inst.attributes = {**inst.attributes, "imsso.scale.scscf.max": 1}
    store.save_instance(inst)
    rig.tick(HIGH, times=10)
    assert rig.scales() == []
    assert any(m.startswith("scscf-out: no action, at bound") and m.endswith("at its max 1") for m in rig.messages())


def test_on_decision_gets_each_told_decision(rig: Rig):
    rig.tick(HIGH, times=6)
    assert rig.told == [("scscf-out", "hold"), ("scscf-in", "none"), ("scscf-out", "scale")]
    assert len(rig.told) == len(rig.decisions())


def test_a_scale_not_started_is_not_counted_as_a_scale(rig: Rig):
    rig.busy = "operation 42 (update) is running on this instance"
    rig.tick(HIGH, times=6)
    rig.busy = None
    rig.tick(HIGH)
    assert len(rig.scales()) == 1
    assert [a for p, a in rig.told if p == "scscf-out"].count("scale") == 1


# --- what is acted on -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [InstanceState.SCALING, InstanceState.HEALING])
def test_an_instance_in_an_operation_is_observed_not_acted_on(store: Store, state: InstanceState):
    rig = Rig(store)
    inst = store.get_instance(rig.instance.id)
    inst.state = state
    store.save_instance(inst)
    rig.set_unit("pcscf-1", UnitState.FAILED)
    rig.tick(HIGH, times=10)
    assert rig.requests == [] and rig.messages() == []
    assert rig.runtime.latest(rig.instance.id)["scscf-1"]["sip.registers_rate"] == HIGH


def test_an_active_instance_with_a_current_operation_is_not_acted_on(rig: Rig):
    rig.store.start_operation(Operation(id=str(uuid.uuid4()), instance_id=rig.instance.id, kind=K.UPDATE, params={}))
    rig.set_unit("pcscf-1", UnitState.FAILED)
    rig.tick(HIGH, times=10)
    assert rig.requests == [] and rig.messages() == []
    assert rig.runtime.latest(rig.instance.id)["scscf-1"]["sip.registers_rate"] == HIGH
    rig.finish()
    rig.tick(HIGH)
    assert rig.heals() == [{"units": ["pcscf-1"], "reason": "pcscf-1 died"}]


def test_an_instance_not_deployed_is_not_even_observed(store: Store):
    rig = Rig(store)
    inst = store.get_instance(rig.instance.id)
    inst.state = InstanceState.DEPLOYED
    store.save_instance(inst)
    rig.tick(HIGH, times=10)
    assert rig.runtime.latest(inst.id) == {} and inst.id not in rig.runtime.watches
    assert rig.requests == []


def test_a_disposed_instance_is_dropped(rig: Rig):
    rig.tick(NORMAL, times=3)
    assert rig.runtime.latest(rig.instance.id) != {}
    inst = rig.store.get_instance(rig.instance.id)
    inst.state = InstanceState.DISPOSED
    rig.store.save_instance(inst)
    rig.tick(NORMAL)
    assert rig.instance.id not in rig.runtime.watches
    assert rig.runtime.latest(rig.instance.id) == {}


def test_instances_are_watched_apart(rig: Rig):
    other = rig.add_instance("other", scscf=1)
    rig.source.counters.pop("scscf-1")  # both instances' units are named scscf-1: give figures to neither
    rig.tick(None, times=3)
    assert set(rig.runtime.watches) == {rig.instance.id, other.id}
    rig.set_unit("pcscf-1", UnitState.FAILED)
    rig.tick()
    assert rig.heals() == [{"units": ["pcscf-1"], "reason": "pcscf-1 died"}]
    assert len(rig.decisions()) == 1 and rig.decisions(other.id) == []


# --- healing ---------------------------------------------------------------------------------------


def test_a_failed_unit_is_healed(rig: Rig):
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()
    assert rig.heals() == [{"units": ["scscf-1"], "reason": "scscf-1 died"}]
    [event] = rig.decisions()
    assert event.message == "heal: scscf-1 died: replacing scscf-1"
    assert event.data == {
        "units": ["scscf-1"],
        "operation": rig.store.get_instance(rig.instance.id).current_operation_id,
    }
    assert rig.told == [("heal", "heal")]


def test_a_running_unit_that_stops_answering_is_healed(rig: Rig):
    rig.silent.add("pcscf-1")
    rig.tick(times=HEAL_AFTER - 1)
    assert rig.heals() == []
    rig.tick()
    assert rig.heals() == [{"units": ["pcscf-1"], "reason": f"pcscf-1 missed {HEAL_AFTER} probes"}]


def test_one_answer_resets_the_missed_probes(rig: Rig):
    rig.silent.add("pcscf-1")
    rig.tick(times=HEAL_AFTER - 1)
    rig.silent.clear()
    rig.tick()
    rig.silent.add("pcscf-1")
    rig.tick(times=HEAL_AFTER - 1)
    assert rig.heals() == []
    rig.tick()
    assert len(rig.heals()) == 1


def test_units_sick_together_are_healed_together(rig: Rig):
    rig.set_unit("dns-1", UnitState.FAILED)
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()
    assert rig.heals() == [{"units": ["dns-1", "scscf-1"], "reason": "dns-1 died; scscf-1 died"}]


def test_a_unit_stopped_or_starting_is_not_healed(rig: Rig):
    rig.set_unit("dns-1", UnitState.STOPPED)
    rig.set_unit("scscf-1", UnitState.STARTING)
    rig.tick(times=HEAL_AFTER + 2)
    assert rig.heals() == []


def test_a_failed_heal_request_is_retried(rig: Rig):
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.busy = "operation 42 (update) is running on this instance"
    rig.tick(times=3)
    assert rig.heals() == [] and rig.decisions() == []
    rig.busy = None
    rig.tick()
    assert rig.heals() == [{"units": ["scscf-1"], "reason": "scscf-1 died"}]


def heal_again(rig: Rig, wait: float) -> None:
    """The heal runs, the unit fails again: no heal before `wait` seconds, one at `wait`."""
    healed = len(rig.heals())
    rig.finish()
    rig.tick(times=int(wait) - 1)
    assert len(rig.heals()) == healed, f"healed again before {wait} s"
    rig.tick()
    assert len(rig.heals()) == healed + 1, f"not healed again after {wait} s"


def test_heals_of_one_unit_back_off(rig: Rig):
    assert (HEAL_BACKOFF, HEAL_LIMIT) == (2.0, 3)  # the figures below
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()
    heal_again(rig, HEAL_BACKOFF)  # 2 s after the 1st heal
    heal_again(rig, HEAL_BACKOFF * 2)  # 4 s after the 2nd


def test_after_the_limit_the_unit_is_left_failed(rig: Rig):
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()
    heal_again(rig, HEAL_BACKOFF)
    heal_again(rig, HEAL_BACKOFF * 2)
    rig.finish()
    rig.tick(times=60)
    assert len(rig.heals()) == HEAL_LIMIT
    unit = rig.unit("scscf-1")
    assert unit.state == UnitState.FAILED
    assert unit.detail.startswith(f"healing stopped after {HEAL_LIMIT} heals in 10 min")
    gave_up = [e for e in rig.decisions() if "no more automatic heals" in e.message]
    assert len(gave_up) == 1
    assert gave_up[0].message.startswith(f"heal: scscf-1 failed again after {HEAL_LIMIT} heals in 10 min")
    assert gave_up[0].data == {"unit": "scscf-1", "heals": HEAL_LIMIT}
    assert rig.told[-1] == ("heal", "give up")


def test_a_silent_unit_given_up_is_marked_failed(rig: Rig):
    rig.silent.add("pcscf-1")
    for _ in range(HEAL_LIMIT):
        rig.tick(times=HEAL_AFTER + 4)
        rig.finish()
    assert len(rig.heals()) == HEAL_LIMIT
    rig.tick(times=HEAL_AFTER + 4)
    assert len(rig.heals()) == HEAL_LIMIT
    assert rig.unit("pcscf-1").state == UnitState.FAILED
    assert rig.unit("pcscf-1").detail.startswith("healing stopped")


def test_healing_resumes_once_the_unit_runs_again(rig: Rig):
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()
    heal_again(rig, HEAL_BACKOFF)
    heal_again(rig, HEAL_BACKOFF * 2)
    rig.finish()
    rig.tick(times=5)
    assert len(rig.heals()) == HEAL_LIMIT
    rig.set_unit("scscf-1", UnitState.RUNNING)  # a provision brought it back
    rig.tick()
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()  # no backoff left over from the heals before
    assert len(rig.heals()) == HEAL_LIMIT + 1


def test_heals_older_than_the_horizon_do_not_count(rig: Rig):
    rig.set_unit("scscf-1", UnitState.FAILED)
    first = rig.now
    rig.tick()
    heal_again(rig, HEAL_BACKOFF)
    rig.finish()
    rig.set_unit("scscf-1", UnitState.RUNNING)
    rig.tick()
    rig.now = first + HEAL_HORIZON + 10  # both heals are older than the horizon now
    rig.set_unit("scscf-1", UnitState.FAILED)
    rig.tick()  # no backoff and no limit from them
    assert len(rig.heals()) == 3
    heal_again(rig, HEAL_BACKOFF)
    heal_again(rig, HEAL_BACKOFF * 2)
    assert len(rig.heals()) == 5
    rig.finish()
    rig.tick(times=10)
    assert len(rig.heals()) == 5  # three within the horizon: given up
    assert rig.unit("scscf-1").detail.startswith("healing stopped")


def test_a_heal_comes_before_a_scale(rig: Rig):
    rig.tick(HIGH, times=5)
    rig.set_unit("pcscf-1", UnitState.FAILED)
    rig.tick(HIGH)
    assert [k for k, _ in rig.requests] == [K.HEAL]


def test_module_constants_are_those_documented():
    assert (rt.HEAL_AFTER, rt.HEAL_BACKOFF, rt.HEAL_LIMIT, rt.HEAL_HORIZON) == (3, 2.0, 3, 600.0)


def test_only_the_history_the_policies_look_at_is_kept(rig: Rig):
    rig.tick(LOW, times=200)
    longest = max(float(v) for k, v in POLICIES.items() if k.endswith(".window"))
    kept = rig.runtime.watches[rig.instance.id].samples
    assert len(kept) <= longest + 3  # the longest window, plus two intervals of slack, at 1 s
    assert kept[-1][0] - kept[0][0] <= longest + 2
