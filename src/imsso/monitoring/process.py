"""CPU and memory of local units: the unit's main process and its children, read with psutil."""

from __future__ import annotations

from collections.abc import Callable

import psutil

from ..model import Instance, Unit
from . import Figures


class ProcessUsage:
    name = "process"

    def __init__(self, alive: Callable[[Instance, Unit], bool]):
        self.alive = alive  # the driver's check that the pid is still the unit's

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        out: Figures = {}
        for unit in units:
            if not unit.pid or not self.alive(instance, unit):
                continue
            try:
                main = psutil.Process(unit.pid)
                procs = [main, *main.children(recursive=True)]
                cpu = rss = 0.0
                for proc in procs:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        cpu += times.user + times.system
                        rss += proc.memory_info().rss
            except psutil.Error:
                continue
            out[unit.name] = {
                "process.cpu_seconds": cpu,
                "process.rss_mb": rss / 2**20,
                "process.count": float(len(procs)),
            }
        return out
