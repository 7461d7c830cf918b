"""SIP figures from Kamailio itself: its statistics over the unit's management RPC (`stats.fetch`)."""

from __future__ import annotations

from collections.abc import Callable

from ..model import Instance, Unit
from . import Figures

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
    "ims_usrloc_scscf.active_impus": "sip.registered_users",      # the 3GPP S-CSCF's registrar
    "ims_usrloc_pcscf.registered_contacts": "sip.registered_users",  # and the P-CSCF's
    "shmem.used_size": "kamailio.shm_used_bytes",
}

Call = Callable[[Instance, Unit, str, str], object]


class KamailioStats:
    name = "kamailio"

    def __init__(self, call: Call, programs: Callable[[Instance, Unit], str]):
        self.call = call            # the driver's RPC: (instance, unit, method, param)
        self.programs = programs    # which program a unit runs

    def sample(self, instance: Instance, units: list[Unit]) -> Figures:
        out: Figures = {}
        for unit in units:
            if self.programs(instance, unit) != "kamailio":
                continue
            try:
                stats = self.call(instance, unit, "stats.fetch", "all")
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
