"""Drivers realise a Plan somewhere (this machine, OpenStack Heat) and report what exists.

They make no decisions: the engine says which unit to start, reconfigure, drain or stop, in which
order; a driver does that one thing or raises DriverError saying what went wrong.
"""

from __future__ import annotations

from typing import Protocol

from ..model import Instance, OrchestratorError, Subscriber, Unit
from ..planning import Plan, UnitPlan
from ..profiles import Profile


class DriverError(OrchestratorError):
    code = "driver"

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message, {"cause": cause} if cause else None)
        self.cause = cause


class Driver(Protocol):
    name: str

    def allocate_address(self, instance: Instance, taken: set[str]) -> str:
        """An address for a new unit of the instance, not in `taken`."""

    def layout(self, instance: Instance, unit_name: str) -> dict[str, str]:
        """Paths and names the templates need for this unit where it runs."""

    def preflight(self, instance: Instance, plan: Plan, new_units: list[str]) -> None:
        """Refuse early, with the fix, what would make starting `new_units` fail."""

    def ensure_unit(self, instance: Instance, unit: Unit, plan: UnitPlan) -> Unit:
        """Start the unit, or adopt it when it already runs; write its files. Idempotent."""

    def wait_ready(self, instance: Instance, unit: Unit, plan: UnitPlan, deadline: float) -> None:
        """Return when the unit answers its probe; raise DriverError with its log when not."""

    def changed_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        """The unit's files whose content differs from the plan."""

    def apply_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        """Apply the changed files live (each has a reload path in the plan); say what was done.

        A file whose reload fails is left as it was, so the next run finds it changed again."""

    def wait_drained(self, instance: Instance, unit: Unit, deadline: float) -> dict[str, float]:
        """Return when the unit has no transaction left (figures seen), or at the deadline."""

    def call(self, instance: Instance, unit: Unit, method: str, *params: str) -> object:
        """Call a management method of a running unit (Kamailio: JSON-RPC)."""

    def stop_unit(self, instance: Instance, unit: Unit) -> None:
        """Stop the unit and remove what it left. Idempotent."""

    def is_alive(self, instance: Instance, unit: Unit) -> bool:
        """Whether the unit exists and is the one recorded (not a reused pid)."""

    def sync_subscribers(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]
                         ) -> None:
        """Make the running units authenticate exactly these subscribers, without a restart."""

    def check_service(self, instance: Instance, plan: Plan, subscriber: Subscriber | None,
                      deadline: float) -> str:
        """End-to-end readiness through the entry point; say what was proven."""

    def dispose(self, instance: Instance, units: list[Unit]) -> list[str]:
        """Remove everything the instance created, and nothing else; say what was removed."""

