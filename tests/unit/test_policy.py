"""Scaling policies (imsso.policy) and counter rates (imsso.monitoring): pure, no store, no clock."""

from __future__ import annotations

import dataclasses

import pytest

from imsso import monitoring, profiles
from imsso.model import InvalidInput
from imsso.policy import Policy, bounds, evaluate, overridden, parse

OUT = Policy("scscf-out", "scscf", "sip.registers_rate", "avg", above=200, window=10, cooldown=30, step=1)
IN = Policy("scscf-in", "scscf", "sip.registers_rate", "avg", below=20, window=30, cooldown=60, step=-1)
ROLES = {"scscf", "pcscf", "dns"}
NOW = 1000.0


def series(*values: float, every: float = 1.0, now: float = NOW, unit: str = "scscf-1"):
    """One sample per value for one unit, the last one at `now`, oldest first."""
    n = len(values)
    return [(now - (n - 1 - i) * every, {unit: v}) for i, v in enumerate(values)]


def run(pol: Policy = OUT, samples=None, size: int = 1, lo: int = 1, hi: int = 5, last_scaled=None):
    return evaluate(pol, samples, NOW, size, lo, hi, last_scaled, 1.0)


def covering(pol: Policy, value: float):
    """Samples every second reaching back over the policy's whole window, all at `value`."""
    return series(*[value] * (int(pol.window) + 1))


# --- evaluate ------------------------------------------------------------------------------------


def test_waiting_until_samples_cover_the_window():
    d = run(OUT, series(300, 300, 300, 300, 300))  # 5 s of a 10 s window
    assert d.action == "waiting"
    assert d.reason == "collecting 10 s of sip.registers_rate"
    assert d.target == d.size == 1


def test_waiting_with_no_samples_at_all():
    d = run(OUT, [])
    assert d.action == "waiting" and d.value is None and d.values == {}


def test_samples_without_the_metric_do_not_count_towards_the_window():
    samples = [(t, {}) for t, _ in series(*[0] * 8, now=NOW - 3)] + series(300, 300, 300)
    assert run(OUT, samples).action == "waiting"


def test_window_counts_as_seen_with_one_interval_of_slack():
    # samples from now-9 to now: the first is one interval after the window's start
    assert run(OUT, series(*[300] * 10)).action == "scale"
    assert run(OUT, series(*[300] * 9)).action == "waiting"


def test_scale_out_when_every_aggregate_of_the_window_is_above():
    d = run(OUT, covering(OUT, 300), size=1)
    assert d.action == "scale"
    assert (d.size, d.target) == (1, 2)
    assert "avg sip.registers_rate > 200 for 10 s" in d.reason
    assert "300.0" in d.reason
    assert d.reason.endswith("scscf 1 -> 2")


def test_scale_in_when_every_aggregate_of_the_window_is_below():
    d = run(IN, covering(IN, 5), size=3)
    assert d.action == "scale"
    assert (d.size, d.target) == (3, 2)
    assert "avg sip.registers_rate < 20 for 30 s" in d.reason
    assert "5.0" in d.reason and "scscf 3 -> 2" in d.reason


def test_target_is_clipped_to_the_bounds():
    big = dataclasses.replace(OUT, step=3)
    d = run(big, covering(big, 300), size=4, hi=5)
    assert d.action == "scale" and d.target == 5 and "scscf 4 -> 5" in d.reason
    down = dataclasses.replace(IN, step=-3)
    assert run(down, covering(down, 1), size=3, lo=2).target == 2


def test_one_sample_within_the_threshold_breaks_the_streak():
    values = [300] * 11
    values[5] = 150
    d = run(OUT, series(*values))
    assert d.action == "none"
    assert d.reason.startswith("within threshold")
    assert d.target == d.size == 1


def test_exactly_at_the_threshold_is_not_beyond_it():
    assert run(OUT, covering(OUT, 200)).action == "none"
    assert run(IN, covering(IN, 20), size=2).action == "none"


def test_samples_older_than_the_window_do_not_break_the_streak():
    samples = series(*([10] * 5 + [300] * 11))  # the low ones end before the window starts
    assert run(OUT, samples).action == "scale"


def test_hold_at_max_when_scaling_out():
    d = run(OUT, covering(OUT, 300), size=5, hi=5)
    assert d.action == "hold"
    assert d.reason.startswith("at bound")
    assert "scscf already at its max 5" in d.reason
    assert d.target == 5


def test_hold_at_min_when_scaling_in():
    d = run(IN, covering(IN, 1), size=2, lo=2)
    assert d.action == "hold"
    assert d.reason.startswith("at bound") and "scscf already at its min 2" in d.reason


def test_at_bound_is_told_rather_than_cooldown():
    d = run(OUT, covering(OUT, 300), size=5, hi=5, last_scaled=NOW - 1)
    assert d.action == "hold" and d.reason.startswith("at bound")


def test_hold_in_cooldown_with_the_seconds_left():
    d = run(OUT, covering(OUT, 300), size=1, last_scaled=NOW - 10)
    assert d.action == "hold"
    assert d.reason.startswith("in cooldown")
    assert "20 s of cooldown left" in d.reason
    assert d.target == 1


def test_scale_once_the_cooldown_is_over():
    assert run(OUT, covering(OUT, 300), last_scaled=NOW - 30).action == "scale"
    assert run(OUT, covering(OUT, 300), last_scaled=NOW - 29).action == "hold"


def test_a_disabled_policy_decides_nothing():
    off = dataclasses.replace(OUT, enabled=False)
    d = run(off, covering(off, 300))
    assert d.action == "none" and d.reason == "disabled"
    assert d.target == d.size


@pytest.mark.parametrize(
    "aggregate, value, action",
    [("avg", 250.0, "scale"), ("max", 400.0, "scale"), ("min", 100.0, "none"), ("sum", 500.0, "scale")],
)
def test_aggregates_over_the_units_of_the_role(aggregate, value, action):
    pol = dataclasses.replace(OUT, aggregate=aggregate)
    samples = [(NOW - i, {"scscf-1": 100.0, "scscf-2": 400.0}) for i in range(10, -1, -1)]
    d = run(pol, samples)
    assert d.value == value
    assert d.action == action


def test_decision_carries_the_value_and_per_unit_values_of_the_last_sample():
    samples = series(*[300] * 10) + [(NOW + 1, {"scscf-1": 220.0, "scscf-2": 260.0})]
    d = evaluate(OUT, samples, NOW + 1, 2, 1, 5, None, 1.0)
    assert d.value == 240.0
    assert d.values == {"scscf-1": 220.0, "scscf-2": 260.0}
    assert d.policy == "scscf-out"


def test_outcome_ignores_the_figures():
    a = run(OUT, covering(OUT, 100))
    b = run(OUT, covering(OUT, 150))
    assert a.reason != b.reason
    assert a.outcome == b.outcome == "none: within threshold"
    assert run(OUT, covering(OUT, 300), size=5, hi=5).outcome == "hold: at bound"


def test_scale_out_never_removes_units_when_the_size_is_beyond_the_max():
    d = run(OUT, covering(OUT, 300), size=4, lo=1, hi=2)
    assert d.action != "scale" or d.target > d.size, d.reason


def test_scale_in_never_adds_units_when_the_size_is_below_the_min():
    d = run(IN, covering(IN, 1), size=1, lo=2, hi=5)
    assert d.action != "scale" or d.target < d.size, d.reason


# --- parse and check -------------------------------------------------------------------------------

RAW = {"name": "p", "role": "scscf", "metric": "sip.registers_rate", "above": 10}


def test_parse_a_valid_policy():
    pol = parse(RAW, ROLES)
    assert (pol.name, pol.role, pol.aggregate, pol.above, pol.below) == ("p", "scscf", "avg", 10, None)
    assert pol.describe() == "avg sip.registers_rate > 10 for 10 s"


def test_the_profile_policies():
    pols = {p.name: p for p in profiles.load("sip-core").policies}
    assert pols["scscf-out"] == OUT
    assert pols["scscf-in"] == IN


@pytest.mark.parametrize(
    "change, message",
    [
        ({"role": "mgcf"}, "unknown role mgcf (roles: dns, pcscf, scscf)"),
        ({"aggregate": "median"}, "aggregate must be one of avg, max, min, sum"),
        ({"below": 5}, "give exactly one of above and below"),
        ({"above": None}, "give exactly one of above and below"),
        ({"window": 0}, "window must be 0-3600 s"),
        ({"window": 3601}, "window must be 0-3600 s"),
        ({"cooldown": -1}, "cooldown 0-86400 s"),
        ({"cooldown": 86401}, "cooldown 0-86400 s"),
        ({"step": 0}, "step must be -10 to 10 and not 0"),
        ({"step": 11}, "step must be -10 to 10 and not 0"),
        ({"step": -11}, "step must be -10 to 10 and not 0"),
        ({"threshold": 3}, "unexpected keyword argument 'threshold'"),
    ],
)
def test_parse_rejects_naming_the_problem(change, message):
    with pytest.raises(InvalidInput) as e:
        parse({**RAW, **change}, ROLES)
    assert e.value.message.startswith("policy p: ")
    assert message in e.value.message


def test_parse_accepts_the_edges():
    for change in ({"window": 3600}, {"cooldown": 0}, {"cooldown": 86400}, {"step": 10}, {"step": -10}):
        parse({**RAW, **change}, ROLES)


# --- overridden ------------------------------------------------------------------------------------


def test_no_override_keeps_the_profile_figures_and_ignores_other_attributes():
    assert overridden([OUT, IN], {"region": "eu", "imsso.scale.scscf.max": 3}) == [OUT, IN]


def test_overrides_change_the_figures():
    got = {
        p.name: p
        for p in overridden(
            [OUT, IN],
            {
                "imsso.policy.scscf-out.above": "5",
                "imsso.policy.scscf-out.window": 3,
                "imsso.policy.scscf-out.cooldown": "5.5",
                "imsso.policy.scscf-out.step": "2",
                "imsso.policy.scscf-in.below": 1.5,
            },
        )
    }
    assert (got["scscf-out"].above, got["scscf-out"].window, got["scscf-out"].cooldown, got["scscf-out"].step) == (
        5.0,
        3.0,
        5.5,
        2,
    )
    assert got["scscf-in"].below == 1.5
    assert got["scscf-in"].window == IN.window  # untouched figures stay the profile's


def test_unknown_policy_is_rejected_with_what_is_accepted():
    with pytest.raises(InvalidInput) as e:
        overridden([OUT, IN], {"imsso.policy.scscf-up.above": 5})
    assert "unknown attribute imsso.policy.scscf-up.above" in e.value.message
    assert "policy in scscf-in, scscf-out" in e.value.message
    assert "field in above, below, window, cooldown, step, enabled" in e.value.message


def test_unknown_field_is_rejected():
    with pytest.raises(InvalidInput, match="unknown attribute imsso.policy.scscf-out.metric"):
        overridden([OUT, IN], {"imsso.policy.scscf-out.metric": "cpu"})


def test_a_policy_keeps_its_direction():
    with pytest.raises(InvalidInput, match=r"imsso.policy.scscf-in: a policy keeps its direction \(below\)"):
        overridden([OUT, IN], {"imsso.policy.scscf-in.above": 5})
    with pytest.raises(InvalidInput, match=r"keeps its direction \(above\)"):
        overridden([OUT, IN], {"imsso.policy.scscf-out.below": 5})


def test_an_override_out_of_range_is_rejected():
    with pytest.raises(InvalidInput, match="policy scscf-out: window must be"):
        overridden([OUT], {"imsso.policy.scscf-out.window": 0})
    with pytest.raises(InvalidInput, match="step must be"):
        overridden([OUT], {"imsso.policy.scscf-out.step": 0})


@pytest.mark.parametrize("field, value", [("above", "lots"), ("step", "1.5"), ("window", "")])
def test_an_override_that_is_no_number_is_rejected(field, value):
    with pytest.raises(InvalidInput) as e:
        overridden([OUT], {f"imsso.policy.scscf-out.{field}": value})
    assert e.value.message == f"imsso.policy.scscf-out.{field} must be a number, not {value!r}"


@pytest.mark.parametrize(
    "value, enabled",
    [
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        (False, False),
        ("true", True),
        (" TRUE ", True),
        ("1", True),
        ("yes", True),
        (True, True),
    ],
)
def test_enabled_parsing(value, enabled):
    assert overridden([OUT], {"imsso.policy.scscf-out.enabled": value})[0].enabled is enabled


def test_enabled_invalid():
    with pytest.raises(InvalidInput) as e:
        overridden([OUT], {"imsso.policy.scscf-out.enabled": "maybe"})
    assert e.value.message == "imsso.policy.scscf-out.enabled must be true or false, not 'maybe'"


# --- bounds ----------------------------------------------------------------------------------------


def test_bounds_default_to_the_profile():
    assert bounds("scscf", 1, 5, {}) == (1, 5)


def test_bounds_narrowed_by_attributes():
    assert bounds("scscf", 1, 5, {"imsso.scale.scscf.min": "2", "imsso.scale.scscf.max": 3}) == (2, 3)
    assert bounds("scscf", 1, 5, {"imsso.scale.scscf.max": 1}) == (1, 1)
    assert bounds("scscf", 1, 5, {"imsso.scale.pcscf.max": 9}) == (1, 5)  # another role's


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"imsso.scale.scscf.max": 6}, "imsso.scale.scscf.max must be between 1 and 5 (the profile's bounds), not 6"),
        ({"imsso.scale.scscf.min": 0}, "imsso.scale.scscf.min must be between 1 and 5 (the profile's bounds), not 0"),
        (
            {"imsso.scale.scscf.min": 4, "imsso.scale.scscf.max": 2},
            "imsso.scale.scscf.min 4 is above imsso.scale.scscf.max 2",
        ),
        ({"imsso.scale.scscf.max": "two"}, "imsso.scale.scscf.max must be a number, not 'two'"),
    ],
)
def test_bounds_rejected(attrs, message):
    with pytest.raises(InvalidInput) as e:
        bounds("scscf", 1, 5, attrs)
    assert e.value.message == message


# --- monitoring.rates ------------------------------------------------------------------------------


def test_counters_become_per_second_rates():
    before = {"scscf-1": {"sip.registers": 100, "process.cpu_seconds": 2.0}}
    after = {"scscf-1": {"sip.registers": 150, "process.cpu_seconds": 3.0}}
    assert monitoring.rates(before, after, 2.0) == {
        "scscf-1": {"sip.registers_rate": 25.0, "process.cpu_seconds_rate": 0.5}
    }


def test_gauges_give_no_rate():
    before = {"scscf-1": {"process.rss_mb": 10.0, "sip.registers": 5}}
    after = {"scscf-1": {"process.rss_mb": 30.0, "sip.registers": 5}}
    assert monitoring.rates(before, after, 1.0) == {"scscf-1": {"sip.registers_rate": 0.0}}


def test_a_counter_that_went_down_gives_no_rate():
    before = {"scscf-1": {"sip.registers": 500, "sip.requests": 10}}
    after = {"scscf-1": {"sip.registers": 3, "sip.requests": 20}}  # restarted between the two
    assert monitoring.rates(before, after, 1.0) == {"scscf-1": {"sip.requests_rate": 10.0}}


def test_a_unit_or_counter_new_in_this_sample_gives_no_rate():
    before = {"scscf-1": {"sip.registers": 1}}
    after = {"scscf-1": {"sip.registers": 2, "sip.requests": 9}, "scscf-2": {"sip.registers": 7}}
    assert monitoring.rates(before, after, 1.0) == {"scscf-1": {"sip.registers_rate": 1.0}}


def test_no_rate_over_no_time():
    s = {"scscf-1": {"sip.registers": 1}}
    assert monitoring.rates(s, {"scscf-1": {"sip.registers": 2}}, 0) == {}


def test_merge_joins_the_figures_of_the_sources():
    got = monitoring.merge({"a": {"x": 1}}, {"a": {"y": 2}, "b": {"x": 3}}, {"a": {"x": 4}})
    assert got == {"a": {"x": 4, "y": 2}, "b": {"x": 3}}
