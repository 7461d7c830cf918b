"""Scaling policies and their evaluation. Pure: samples in, a decision out, nothing called.

A policy watches one metric of one role's units, aggregated over the units at each sample, and
asks for a step when the aggregate has been beyond its threshold for a whole window. The profile
gives the policies; an instance may override their figures, and its role's bounds, within the
profile's own bounds.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .model import InvalidInput

if TYPE_CHECKING:
    from .profiles import Profile

AGGREGATES: dict[str, Callable[[list[float]], float]] = {"avg": statistics.fmean, "max": max, "min": min, "sum": sum}
OVERRIDABLE = ("above", "below", "window", "cooldown", "step", "enabled")
POLICY_PREFIX = "imsso.policy."  # imsso.policy.<name>.<field>
BOUND_PREFIX = "imsso.scale."  # imsso.scale.<role>.min / .max


@dataclass(frozen=True)
class Policy:
    name: str
    role: str
    metric: str
    aggregate: str = "avg"
    above: float | None = None  # scale when the aggregate is above this ...
    below: float | None = None  # ... or below this (exactly one of the two)
    window: float = 10.0  # seconds the condition must hold without a break
    cooldown: float = 30.0  # seconds after a scale of the role before another
    step: int = 1  # units added (positive) or removed (negative)
    enabled: bool = True

    def describe(self) -> str:
        op, threshold = (">", self.above) if self.above is not None else ("<", self.below)
        return f"{self.aggregate} {self.metric} {op} {threshold:g} for {self.window:g} s"


@dataclass(frozen=True)
class Decision:
    policy: str
    action: str  # "scale" | "hold" (breach, but cooldown or bound) | "none" | "waiting"
    reason: str
    value: float | None  # the aggregate at the last sample
    size: int
    target: int
    values: dict[str, float] = dataclasses.field(default_factory=dict)  # per unit, last sample

    @property
    def outcome(self) -> str:
        """What changes from one decision to the next worth an event (not the figures)."""
        return f"{self.action}: {self.reason.split(':')[0]}"


def parse(raw: dict[str, Any], roles: Iterable[str]) -> Policy:
    """A policy of a profile.yaml, checked."""
    roles = set(roles)
    try:
        policy = Policy(**raw)
    except TypeError as exc:
        raise InvalidInput(f"policy {raw.get('name', '?')}: {exc}") from None
    check(policy, roles)
    return policy


def check(policy: Policy, roles: set[str]) -> None:
    where = f"policy {policy.name}"
    if policy.role not in roles:
        raise InvalidInput(f"{where}: unknown role {policy.role} (roles: {', '.join(sorted(roles))})")
    if policy.aggregate not in AGGREGATES:
        raise InvalidInput(f"{where}: aggregate must be one of {', '.join(AGGREGATES)}")
    if (policy.above is None) == (policy.below is None):
        raise InvalidInput(f"{where}: give exactly one of above and below")
    if not 0 < policy.window <= 3600 or not 0 <= policy.cooldown <= 86400:
        raise InvalidInput(f"{where}: window must be 0-3600 s and cooldown 0-86400 s")
    if policy.step == 0 or abs(policy.step) > 10:
        raise InvalidInput(f"{where}: step must be -10 to 10 and not 0")


def overridden(policies: Iterable[Policy], attributes: dict[str, Any]) -> list[Policy]:
    """The profile's policies with the instance's `imsso.policy.<name>.<field>` applied."""
    by_name = {p.name: p for p in policies}
    changes: dict[str, dict[str, Any]] = {}
    for key, value in attributes.items():
        if not key.startswith(POLICY_PREFIX):
            continue
        name, _, field = key[len(POLICY_PREFIX) :].rpartition(".")
        if name not in by_name or field not in OVERRIDABLE:
            raise InvalidInput(
                f"unknown attribute {key}: accepted are {POLICY_PREFIX}<policy>.<field> with "
                f"policy in {', '.join(sorted(by_name)) or '(none)'} and field in "
                f"{', '.join(OVERRIDABLE)}"
            )
        changes.setdefault(name, {})[field] = _typed(key, field, value)
    result = []
    for policy in by_name.values():
        changed = changes.get(policy.name, {})
        if "above" in changed and policy.below is not None or "below" in changed and policy.above is not None:
            raise InvalidInput(
                f"{POLICY_PREFIX}{policy.name}: a policy keeps its direction "
                f"({'below' if policy.below is not None else 'above'})"
            )
        updated = dataclasses.replace(policy, **changed)
        check(updated, {policy.role})
        result.append(updated)
    return result


def bounds(role: str, lo: int, hi: int, attributes: dict[str, Any]) -> tuple[int, int]:
    """The role's autoscaling bounds: `imsso.scale.<role>.min/max` within the profile's."""
    got = []
    for end, default in (("min", lo), ("max", hi)):
        key = f"{BOUND_PREFIX}{role}.{end}"
        value = int(_typed(key, "step", attributes.get(key, default)))
        if not lo <= value <= hi:
            raise InvalidInput(f"{key} must be between {lo} and {hi} (the profile's bounds), not {value}")
        got.append(value)
    if got[0] > got[1]:
        raise InvalidInput(f"{BOUND_PREFIX}{role}.min {got[0]} is above {BOUND_PREFIX}{role}.max {got[1]}")
    return got[0], got[1]


def check_overrides(profile: Profile, attributes: dict[str, Any]) -> None:
    """The one check of an instance's `imsso.policy.*` and `imsso.scale.*` attributes against its
    profile, refused with what is accepted."""
    overridden(profile.policies, attributes)
    for key in attributes:
        if key.startswith(BOUND_PREFIX):
            role_name, _, end = key[len(BOUND_PREFIX) :].rpartition(".")
            if end not in ("min", "max"):
                raise InvalidInput(f"unknown attribute {key}: accepted are {BOUND_PREFIX}<role>.min and .max")
            role = profile.role(role_name)
            bounds(role_name, role.min, role.max, attributes)


def _typed(key: str, field: str, value: Any) -> Any:
    try:
        if field == "enabled":
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        if field == "step":
            return int(str(value), 10)
        return float(value)
    except ValueError:
        raise InvalidInput(
            f"{key} must be {'true or false' if field == 'enabled' else 'a number'}, not {value!r}"
        ) from None


Sample = tuple[float, dict[str, float]]  # (time, metric value per unit)


def evaluate(
    policy: Policy,
    samples: list[Sample],
    now: float,
    size: int,
    lo: int,
    hi: int,
    last_scaled: float | None,
    interval: float,
) -> Decision:
    """What the policy asks now, from the samples of its metric (oldest first)."""

    def decide(action: str, reason: str, target: int = size) -> Decision:
        last = samples[-1][1] if samples else {}
        value = AGGREGATES[policy.aggregate](list(last.values())) if last else None
        return Decision(policy.name, action, reason, value, size, target, dict(last))

    if not policy.enabled:
        return decide("none", "disabled")
    recent = [(t, v) for t, v in samples if t >= now - policy.window and v]
    # The window counts as seen once samples reach back to its start (one interval of slack).
    if not recent or recent[0][0] > now - policy.window + interval:
        return decide("waiting", f"collecting {policy.window:g} s of {policy.metric}")
    aggregates = [AGGREGATES[policy.aggregate](list(v.values())) for _, v in recent]
    above, below = policy.above, policy.below  # exactly one is set (check)
    breach = (
        all(a > above for a in aggregates)
        if above is not None
        else below is not None and all(a < below for a in aggregates)
    )
    figure = f"{policy.describe()} ({', '.join(f'{a:.1f}' for a in aggregates[-3:])})"
    if not breach:
        return decide("none", f"within threshold: not {figure}")
    # Towards the step only: a size already beyond a bound is left to the other policy or a user.
    target = max(size, min(hi, size + policy.step)) if policy.step > 0 else min(size, max(lo, size + policy.step))
    if target == size:
        bound = f"max {hi}" if policy.step > 0 else f"min {lo}"
        return decide("hold", f"at bound: {figure}, {policy.role} already at its {bound}")
    if last_scaled is not None and now - last_scaled < policy.cooldown:
        left = policy.cooldown - (now - last_scaled)
        return decide("hold", f"in cooldown: {figure}, {left:.0f} s of cooldown left")
    return decide("scale", f"threshold crossed: {figure}: {policy.role} {size} -> {target}", target)
