"""Watches what runs, so the API tells the truth: a unit that died is shown failed, with an event.

Observation only: it records what it sees and never starts or stops anything (healing is an
operation of its own, decided elsewhere). Instances with an operation running are left to it.
"""

from __future__ import annotations

import logging
import threading

from ..drivers import Driver
from ..model import UnitState
from ..store import Store

log = logging.getLogger("imsso.observer")
WATCHED = (UnitState.RUNNING, UnitState.STARTING)


class Observer:
    def __init__(self, store: Store, drivers: dict[str, Driver], interval: float = 2.0):
        self.store = store
        self.drivers = drivers
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="imsso-observer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.interval + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.observe()
            except Exception:  # an observation that fails must not end observing
                log.exception("observation failed")

    def observe(self) -> list[str]:
        """Mark dead units failed; return what changed."""
        changed = []
        for instance in self.store.list_instances():
            if instance.current_operation_id:
                continue
            driver = self.drivers.get(instance.driver)
            for unit in self.store.units(instance.id):
                if unit.state in WATCHED and driver and not driver.is_alive(instance, unit):
                    # Conditional: an operation may have started (and restarted it) meanwhile.
                    if not self.store.mark_unit_failed(unit, "not running (found dead by the observer)"):
                        continue
                    self.store.add_event(
                        instance.id, "unit", f"{unit.name} is not running", {"unit": unit.name, "pid": unit.pid}
                    )
                    changed.append(f"{instance.name}/{unit.name}")
        return changed
