"""Metric sources behind one interface: each gives, for an instance's units, figures by name.

Counters (totals since a unit started) and gauges come out of the sources; `rates` turns two
samples of a counter into a per-second rate named `<counter>_rate`, which is what policies watch
for load. A source that cannot answer for a unit leaves it out: no figure is better than a guess.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from ..model import Instance, Unit

Figures = dict[str, dict[str, float]]  # unit name -> metric -> value


class Source(Protocol):
    name: str

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        """The figures of the units this source knows; an unreachable unit is left out."""


# Counters: rates are derived from them; everything else is a gauge.
COUNTERS = {
    "sip.registers",
    "sip.requests",
    "sip.replies_1xx",
    "sip.replies_2xx",
    "sip.replies_3xx",
    "sip.replies_4xx",
    "sip.replies_5xx",
    "sip.replies_6xx",
    "process.cpu_seconds",
    "diameter.requests",
}


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


class AllowedHosts:
    """Lets a source reach only hosts the operator allowed, when the address comes from a tenant's
    attribute (a tenant must not make the orchestrator call, or send its Zabbix password to, any
    address it likes). Hosts are names or networks (IMSSO_METRICS_HOSTS)."""

    def __init__(self, source: Source, attribute: str, allowed: list[str], address: Callable[[object], str]):
        self.source = source
        self.name = source.name
        self.attribute = attribute
        self.address = address  # the URL the source would call for an attribute value
        self.names = {a.lower() for a in allowed if not _network(a)}
        self.networks = [n for a in allowed if (n := _network(a))]

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        value = instance.attributes.get(self.attribute)
        if value and not self.allows(urlsplit(self.address(value)).hostname or ""):
            return {}
        return self.source.sample(instance, units)

    def allows(self, host: str) -> bool:
        if host.lower() in self.names:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


def _network(text: str):
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None
