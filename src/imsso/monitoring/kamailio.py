"""SIP figures from Kamailio itself: its statistics over the unit's management RPC (`stats.fetch`).

Only drivers with a management path (`capabilities.management`) can ask; the units of the others
are skipped, and that is said once per driver, not hidden behind a failed call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..drivers import BaseDriver
from ..model import Instance, Unit
from ..programs import Program
from . import Figures

log = logging.getLogger(__name__)

# Kamailio statistic -> our metric name
STATISTICS = {
    "core.rcv_requests_register": "sip.registers",
    "core.rcv_requests": "sip.requests",
    "core.rcv_replies_1xx": "sip.replies_1xx",
    "core.rcv_replies_2xx": "sip.replies_2xx",
    "core.rcv_replies_3xx": "sip.replies_3xx",
    "core.rcv_replies_4xx": "sip.replies_4xx",
    "core.rcv_replies_5xx": "sip.replies_5xx",
    "core.rcv_replies_6xx": "sip.replies_6xx",
    "tmx.active_transactions": "sip.transactions",
    "usrloc.registered_users": "sip.registered_users",
    "ims_usrloc_scscf.active_impus": "sip.registered_users",  # the 3GPP S-CSCF's registrar
    "ims_usrloc_pcscf.registered_contacts": "sip.registered_users",  # and the P-CSCF's
    "shmem.used_size": "kamailio.shm_used_bytes",
}


class KamailioStats:
    name = "kamailio"

    def __init__(self, driver: Callable[[Instance], BaseDriver], program: Callable[[Instance, Unit], Program]):
        self.driver = driver  # the instance's driver: its management calls
        self.program = program  # what a unit runs
        self._told: set[str] = set()  # drivers already said to have no management path

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        out: Figures = {}
        mine = [u for u in units if self.program(instance, u).metrics == self.name]
        if not mine:
            return out
        driver = self.driver(instance)
        if not driver.capabilities.management:
            if driver.name not in self._told:
                self._told.add(driver.name)
                log.info(
                    "no %s figures for units of driver %s: it has no management path to them", self.name, driver.name
                )
            return out
        for unit in mine:
            try:
                stats = driver.call(instance, unit, "stats.fetch", "all")
            except Exception:  # a unit that does not answer has no figures this time
                continue
            out[unit.name] = parse(stats)
        return out


def parse(stats: object) -> dict[str, float]:
    """`stats.fetch all` answers {"group.name": "value", ...}."""
    figures: dict[str, float] = {}
    if not isinstance(stats, dict):
        return figures
    for key, name in STATISTICS.items():
        try:
            figures[name] = float(stats[key])
        except (KeyError, TypeError, ValueError):
            continue
    return figures
