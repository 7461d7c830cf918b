"""The HSS's own figures: Diameter requests, their latency, registered identities (its /status)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from .. import programs
from ..model import Instance, Unit
from ..programs import Program
from . import Figures


class HssStatus:
    name = "hss"

    def __init__(self, program: Callable[[Instance, Unit], Program], timeout: float = 1.0):
        self.program = program  # what a unit runs: its status port
        self.timeout = timeout

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        out: Figures = {}
        for unit in units:
            program = self.program(instance, unit)
            port = program.ports.get(programs.STATUS)
            if program.metrics != self.name or port is None:
                continue
            try:
                status = httpx.get(f"http://{unit.address}:{port}/status", timeout=self.timeout).json()
            except (httpx.HTTPError, ValueError):
                continue  # no answer: no figures this time
            out[unit.name] = parse(status)
        return out


def parse(status: dict) -> dict[str, float]:
    latency = status.get("latency_ms", {})
    figures = {
        "diameter.requests": status.get("requests_total"),
        "diameter.latency_avg_ms": latency.get("avg"),
        "diameter.latency_p99_ms": latency.get("p99"),
        "ims.registered_impus": status.get("registered_impus"),
        "ims.subscribers": status.get("subscribers"),
    }
    return {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}
