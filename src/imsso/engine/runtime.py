"""The runtime loop: observe every active instance, decide with its policies, act through ordinary
operations (scale, heal), and say why in an event each time the verdict changes.

Observation keeps a short history of figures per instance in memory (a restart starts it again:
a policy then waits one window before it decides). Decisions are `policy.evaluate`'s; this loop
only feeds it and carries out what it asks.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import monitoring, policy
from ..model import Conflict, Instance, InstanceState, NotApplicable, OperationKind, Unit, UnitState
from ..monitoring import Figures, Source
from ..profiles import ProfileRegistry, default_registry
from ..store import Store

log = logging.getLogger("imsso.runtime")
HEAL_AFTER = 3  # probes missed in a row before a unit that still runs is healed
HEAL_BACKOFF = 2.0  # seconds before the first heal of a unit; doubled at each new failure
HEAL_LIMIT = 3  # heals of one unit within HEAL_HORIZON before it is left failed
HEAL_HORIZON = 600.0


@dataclass
class Watch:
    """What the loop remembers of one instance."""

    samples: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4000))
    horizon: float = 60.0  # seconds of samples kept: the longest window of the instance's policies
    raw: tuple[float, Figures] | None = None  # the last counters, for rates
    sizes: dict[str, int] = field(default_factory=dict)
    scaled_at: dict[str, float] = field(default_factory=dict)  # role -> when its size last changed
    outcomes: dict[str, str] = field(default_factory=dict)  # policy -> last outcome told
    missed: dict[str, int] = field(default_factory=dict)  # unit -> probes missed in a row
    heals: dict[str, list[float]] = field(default_factory=dict)  # unit -> times it was healed
    given_up: set[str] = field(default_factory=set)
    latest: Figures = field(default_factory=dict)


class Runtime:
    def __init__(
        self,
        store: Store,
        request: Callable[[Instance, OperationKind, dict[str, Any]], Any],
        sources: list[Source],
        answers: Callable[[Instance, Unit], bool],
        interval: float = 1.0,
        on_decision: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        alive: Callable[[Instance, Unit], bool] | None = None,
        profiles: ProfileRegistry | None = None,
    ):
        self.store = store
        self.profiles = profiles or default_registry()
        self.request = request  # starts an operation like a user's request (Conflict if busy)
        self.sources = sources
        self.answers = answers  # does the unit answer its probe now
        self.alive = alive or (lambda instance, unit: True)  # does its process still exist
        self.interval = interval
        self.on_decision = on_decision  # (policy, action) of every decision told
        self.clock = clock
        self.watches: dict[str, Watch] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="imsso-runtime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # one bad tick must not end the loop
                log.exception("runtime tick failed")

    def latest(self, instance_id: str) -> Figures:
        watch = self.watches.get(instance_id)
        return dict(watch.latest) if watch else {}

    def tick(self) -> None:
        live = set()
        for instance in self.store.list_instances():
            if instance.state not in (InstanceState.ACTIVE, InstanceState.SCALING, InstanceState.HEALING):
                continue
            live.add(instance.id)
            watch = self.watches.setdefault(instance.id, Watch())
            units = self.store.units(instance.id)
            self.observe(instance, units, watch)
            if instance.current_operation_id or instance.state != InstanceState.ACTIVE:
                continue  # one operation at a time: decide again once it is over
            if not self.heal(instance, units, watch):
                self.decide(instance, units, watch)
        for gone in set(self.watches) - live:
            del self.watches[gone]

    # observe
    def observe(self, instance: Instance, units: list[Unit], watch: Watch) -> None:
        now = self.clock()
        running = [u for u in units if u.state == UnitState.RUNNING]
        raw = monitoring.merge(*(self._sample(s, instance, running) for s in self.sources))
        figures = raw
        if watch.raw is not None:
            figures = monitoring.merge(raw, monitoring.rates(watch.raw[1], raw, now - watch.raw[0]))
        watch.raw = (now, raw)
        watch.latest = figures
        watch.samples.append((now, figures))
        while watch.samples[0][0] < now - watch.horizon:  # every unit's figures: keep only what counts
            watch.samples.popleft()
        for role, size in instance.sizes.items():
            if watch.sizes.get(role) != size:  # a scale (ours or a user's), or the first look
                watch.scaled_at[role] = now
        watch.sizes = dict(instance.sizes)

    def _sample(self, source: Source, instance: Instance, units: list[Unit]) -> Figures:
        try:
            return source.sample(instance, units)
        except Exception:
            log.exception("metric source %s failed for %s", source.name, instance.name)
            return {}

    # decide and act
    def decide(self, instance: Instance, units: list[Unit], watch: Watch) -> None:
        prof = self.profiles.load(instance.profile)
        try:
            policies = policy.overridden(prof.policies, instance.attributes)
        except Exception as exc:
            self._tell(instance, watch, "policies", "invalid", f"policies not applied: {exc}", {})
            return
        now = self.clock()
        watch.horizon = max((p.window for p in policies), default=0.0) + 2 * self.interval
        for pol in policies:
            role = prof.role(pol.role)
            lo, hi = policy.bounds(pol.role, role.min, role.max, instance.attributes)
            members = {u.name for u in units if u.role == pol.role}
            samples = [
                (t, {u: f[pol.metric] for u, f in figures.items() if u in members and pol.metric in f})
                for t, figures in watch.samples
            ]
            decision = policy.evaluate(
                pol,
                samples,
                now,
                instance.sizes.get(pol.role, role.default),
                lo,
                hi,
                watch.scaled_at.get(pol.role),
                self.interval,
            )
            if decision.action == "scale":
                self._scale(instance, pol, decision, watch)
                return  # one action per tick: the next decisions see its result
            if decision.action != "waiting":
                self._tell(
                    instance,
                    watch,
                    pol.name,
                    decision.outcome,
                    f"{pol.name}: no action, {decision.reason}",
                    _data(pol, decision),
                )

    def _scale(self, instance: Instance, pol: policy.Policy, decision: policy.Decision, watch: Watch) -> None:
        data = _data(pol, decision)
        try:
            op = self.request(
                instance, OperationKind.SCALE, {"sizes": {pol.role: decision.target}, "cause": f"policy {pol.name}"}
            )
        except (Conflict, NotApplicable) as exc:  # a user's operation came first: decide again later
            self._tell(
                instance, watch, pol.name, "busy", f"{pol.name}: scale not started: {exc}", {**data, "action": "busy"}
            )
            return
        watch.scaled_at[pol.role] = self.clock()
        watch.outcomes[pol.name] = decision.outcome
        self.store.add_event(
            instance.id, "decision", f"{pol.name}: scale, {decision.reason}", {**data, "operation": op.id}
        )
        self._count(pol.name, "scale")

    def _tell(
        self, instance: Instance, watch: Watch, key: str, outcome: str, message: str, data: dict[str, Any]
    ) -> None:
        """An event when the verdict differs from the last one told (not at every tick)."""
        if watch.outcomes.get(key) == outcome:
            return
        watch.outcomes[key] = outcome
        self.store.add_event(instance.id, "decision", message, data)
        self._count(key, data.get("action", outcome))

    def _count(self, key: str, action: str) -> None:
        if self.on_decision is not None:
            self.on_decision(key, action)

    # heal
    def heal(self, instance: Instance, units: list[Unit], watch: Watch) -> bool:
        """Start a heal of the units that died or stopped answering; True when one was started."""
        now = self.clock()
        sick = []
        for unit in units:
            if unit.name in watch.given_up:
                if unit.state != UnitState.RUNNING:
                    continue
                watch.given_up.discard(unit.name)  # a provision brought it back: heal it again
                watch.heals.pop(unit.name, None)
            if unit.state == UnitState.RUNNING:
                if self.alive(instance, unit):  # a process that is gone needs no missed probes
                    missed = 0 if self.answers(instance, unit) else watch.missed.get(unit.name, 0) + 1
                    watch.missed[unit.name] = missed
                    if missed < HEAL_AFTER:
                        continue
            elif unit.state != UnitState.FAILED:
                continue
            recent = [t for t in watch.heals.get(unit.name, []) if now - t < HEAL_HORIZON]
            watch.heals[unit.name] = recent
            if len(recent) >= HEAL_LIMIT:
                self._give_up(instance, unit, watch, len(recent))
                continue
            if recent and now - recent[-1] < HEAL_BACKOFF * 2 ** (len(recent) - 1):
                continue  # backing off
            sick.append(unit)
        if not sick:
            return False
        reason = "; ".join(
            f"{u.name} "
            + (f"missed {watch.missed[u.name]} probes" if watch.missed.get(u.name, 0) >= HEAL_AFTER else "died")
            for u in sick
        )
        try:
            op = self.request(instance, OperationKind.HEAL, {"units": [u.name for u in sick], "reason": reason})
        except (Conflict, NotApplicable):
            return True  # busy: no scale decision either until the instance is free
        for unit in sick:
            watch.heals.setdefault(unit.name, []).append(now)
            watch.missed[unit.name] = 0
        self.store.add_event(
            instance.id,
            "decision",
            f"heal: {reason}: replacing {', '.join(u.name for u in sick)}",
            {"units": [u.name for u in sick], "operation": op.id},
        )
        self._count("heal", "heal")
        return True

    def _give_up(self, instance: Instance, unit: Unit, watch: Watch, times: int) -> None:
        watch.given_up.add(unit.name)
        detail = f"healing stopped after {times} heals in {HEAL_HORIZON / 60:.0f} min: provision to retry"
        if unit.state == UnitState.FAILED:
            unit.detail = detail
            self.store.save_unit(unit)
        else:  # running but not answering
            self.store.mark_unit_failed(unit, detail)
        self.store.add_event(
            instance.id,
            "decision",
            f"heal: {unit.name} failed again after {times} heals "
            f"in {HEAL_HORIZON / 60:.0f} min: left failed, no more automatic heals "
            "(a provision retries it)",
            {"unit": unit.name, "heals": times},
        )
        self._count("heal", "give up")


def _data(pol: policy.Policy, decision: policy.Decision) -> dict[str, Any]:
    return {
        "policy": pol.name,
        "role": pol.role,
        "metric": pol.metric,
        "aggregate": pol.aggregate,
        "threshold": pol.above if pol.above is not None else pol.below,
        "comparison": "above" if pol.above is not None else "below",
        "window": pol.window,
        "cooldown": pol.cooldown,
        "action": decision.action,
        "value": decision.value,
        "values": decision.values,
        "size": decision.size,
        "target": decision.target,
    }
