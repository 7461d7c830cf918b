"""Metric sources behind one interface: each gives, for an instance's units, figures by name.

Counters (totals since a unit started) and gauges come out of the sources; `rates` turns two
samples of a counter into a per-second rate named `<counter>_rate`, which is what policies watch
for load. A source that cannot answer for a unit leaves it out: no figure is better than a guess.
"""

from __future__ import annotations

from typing import Protocol

from ..model import Instance, Unit

Figures = dict[str, dict[str, float]]  # unit name -> metric -> value


class Source(Protocol):
    name: str

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        """The figures of the units this source knows; an unreachable unit is left out."""


# Counters: rates are derived from them; everything else is a gauge.
COUNTERS = {"sip.registers", "sip.requests", "sip.replies_1xx", "sip.replies_2xx", "sip.replies_3xx",
            "sip.replies_4xx", "sip.replies_5xx", "sip.replies_6xx", "process.cpu_seconds"}


def rates(previous: Figures, current: Figures, seconds: float) -> Figures:
    """`<counter>_rate` per unit from two samples `seconds` apart; a counter that went down (the
    unit restarted) gives no rate for that interval."""
    out: Figures = {}
    if seconds <= 0:
        return out
    for unit, figures in current.items():
        before = previous.get(unit, {})
        for name, value in figures.items():
            if name in COUNTERS and name in before and value >= before[name]:
                out.setdefault(unit, {})[f"{name}_rate"] = (value - before[name]) / seconds
    return out


def merge(*parts: Figures) -> Figures:
    out: Figures = {}
    for part in parts:
        for unit, figures in part.items():
            out.setdefault(unit, {}).update(figures)
    return out
