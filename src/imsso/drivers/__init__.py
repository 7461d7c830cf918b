"""Drivers realise a Plan somewhere (this machine, OpenStack Heat) and report what exists.

Two shapes, each an explicit interface with neutral types:
- `UnitDriver` realises a plan unit by unit: the engine says start, probe, reload, drain, stop,
  and the driver does that one thing (local).
- `PlanDriver` hands a whole rendered plan (`PlanRequest`) to an engine of its own and reports its
  status (`PlanStatus`) (openstack: Heat).
Both share `BaseDriver`: a name, an option prefix and its check, the attributes fixed at creation,
and `Capabilities`. The engine and the service choose by shape or capability, never by name.
They make no decisions; a driver does what it is told or raises DriverError saying what went wrong.

`registry()` maps every driver name to its class: a new driver is a new package and one line there.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import Settings
from ..model import Instance, InvalidInput, OrchestratorError, Subscriber, Unit
from ..planning import Plan, UnitLayout, UnitPlan
from ..profiles import Profile


class DriverError(OrchestratorError):
    code = "driver"

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message, {"cause": cause} if cause else None)
        self.cause = cause


@dataclass(frozen=True)
class Capabilities:
    """What a driver can do beyond realising a plan, for the engine, service and monitoring."""

    live_reload: bool = False  # changed files reach running units without replacing them
    heal: bool = False  # dead units are seen (is_alive) and can be replaced one by one
    preview: bool = False  # what a deploy would send can be shown before (service `plan`)
    management: bool = False  # management calls reach a running unit (`call`): figures, drains
    probe: bool = False  # the orchestrator can probe a unit itself (`answers`)


@dataclass(frozen=True)
class DriverContext:
    """What the orchestrator hands every driver it builds."""

    settings: Settings
    keystone_catalog: Callable[[str], list[dict]] | None = None  # a tenant's token -> its catalog
    keystone_url: str = ""


class BaseDriver(ABC):
    """What every driver offers, whatever its shape."""

    name: str = ""
    option_prefix: ClassVar[str] = ""  # its instance attributes, e.g. "imsso.os."
    create_only: ClassVar[frozenset[str]] = frozenset()  # attributes fixed once units have addresses
    capabilities: ClassVar[Capabilities] = Capabilities()
    # What `plan` shows for this driver, in words ("Heat stacks"); empty: it shows nothing.
    plan_noun: ClassVar[str] = ""

    @classmethod
    def build(cls, context: DriverContext) -> BaseDriver:
        """The driver as the orchestrator's settings configure it."""
        raise NotImplementedError(f"driver {cls.name} cannot be built from settings")

    def check_options(self, instance: Instance) -> None:
        """Refuse the instance's options (attributes under `option_prefix`), saying what is accepted."""
        return None  # none by default

    def remember_token(self, tenant: str, token: str) -> None:
        """A tenant's token, from its last request, for drivers that act in the tenant's name."""
        return None  # none by default

    @abstractmethod
    def allocate_address(self, instance: Instance, taken: set[str]) -> str:
        """An address for a new unit of the instance, not in `taken`."""

    @abstractmethod
    def layout(self, instance: Instance, unit_name: str) -> UnitLayout:
        """Paths and names the templates need for this unit where it runs."""

    @abstractmethod
    def sync_subscribers(self, instance: Instance, profile: Profile, subscribers: list[Subscriber]) -> None:
        """Make the running units authenticate exactly these subscribers, without a restart."""

    @abstractmethod
    def check_service(self, instance: Instance, plan: Plan, subscriber: Subscriber | None, deadline: float) -> str:
        """End-to-end readiness through the entry point; say what was proven."""

    @abstractmethod
    def is_alive(self, instance: Instance, unit: Unit) -> bool:
        """Whether the unit exists and is the one recorded (not a reused pid)."""

    @abstractmethod
    def answers(self, instance: Instance, unit: Unit, probe: str) -> bool:
        """Whether the unit answers its probe now (one short try)."""

    @abstractmethod
    def dispose(self, instance: Instance, units: list[Unit]) -> list[str]:
        """Remove everything the instance created, and nothing else; say what was removed."""

    def call(self, instance: Instance, unit: Unit, method: str, *params: str) -> object:
        """Call a management method of a running unit; only with `capabilities.management`."""
        raise DriverError(f"driver {self.name} has no management path to {unit.name}: cannot call {method}")


class UnitDriver(BaseDriver):
    """Realises a plan unit by unit, as the engine says."""

    @abstractmethod
    def preflight(self, instance: Instance, plan: Plan, new_units: list[str]) -> None:
        """Refuse early, with the fix, what would make starting `new_units` fail."""

    @abstractmethod
    def ensure_unit(self, instance: Instance, unit: Unit, plan: UnitPlan) -> Unit:
        """Start the unit, or adopt it when it already runs; write its files. Idempotent."""

    @abstractmethod
    def wait_ready(self, instance: Instance, unit: Unit, plan: UnitPlan, deadline: float) -> None:
        """Return when the unit answers its probe; raise DriverError with its log when not."""

    @abstractmethod
    def changed_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        """The unit's files whose content differs from the plan."""

    @abstractmethod
    def apply_files(self, instance: Instance, unit: Unit, plan: UnitPlan) -> list[str]:
        """Apply the changed files live (each has a reload path in the plan); say what was done.

        A file whose reload fails is left as it was, so the next run finds it changed again."""

    @abstractmethod
    def wait_drained(self, instance: Instance, unit: Unit, deadline: float) -> dict[str, float]:
        """Return when the unit has no transaction left (figures seen), or at the deadline."""

    @abstractmethod
    def stop_unit(self, instance: Instance, unit: Unit) -> None:
        """Stop the unit and remove what it left. Idempotent."""


@dataclass
class PlanRequest:
    """A whole rendered plan as a plan driver's engine takes it: the document (a Heat template, a
    set of manifests), its environment and the files they name, and how long it may take."""

    name: str
    template: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    timeout_mins: int = 60


@dataclass
class PlanStatus:
    """What the plan driver's engine says about what it realised, outputs included."""

    id: str
    name: str
    status: str  # the engine's own words: CREATE_COMPLETE, UPDATE_FAILED ...
    reason: str
    outputs: dict[str, str] = field(default_factory=dict)


class PlanDriver(BaseDriver):
    """Realises a whole plan through an engine of its own."""

    @abstractmethod
    def request(self, instance: Instance, profile: Profile, plan: Plan, subscribers: list[Subscriber]) -> PlanRequest:
        """What a create or update of the instance sends. Pure: nothing is called."""

    @abstractmethod
    def apply(
        self, instance: Instance, request: PlanRequest, record_id: Callable[[str], None], deadline: float
    ) -> PlanStatus:
        """Create or update what the request describes and wait; `record_id` hears its id at once."""

    @abstractmethod
    def preview(self, instance: Instance, request: PlanRequest) -> dict[str, Any]:
        """How the request differs from what runs. Changes nothing."""


Driver = UnitDriver | PlanDriver

# name -> "module:class", imported when asked: a driver's dependencies load only with it.
DRIVERS = {
    "local": "imsso.drivers.local:LocalDriver",
    "openstack": "imsso.drivers.openstack:OpenStackDriver",
}


def registry() -> dict[str, type[BaseDriver]]:
    """Every known driver class by name."""
    found: dict[str, type[BaseDriver]] = {}
    for name, where in DRIVERS.items():
        module, _, attr = where.partition(":")
        found[name] = getattr(importlib.import_module(module), attr)
    return found


def build_all(context: DriverContext) -> dict[str, Driver]:
    """Every registered driver, built from the settings: each instance names its own."""
    built: dict[str, Driver] = {}
    for name, cls in registry().items():
        driver = cls.build(context)
        if not isinstance(driver, (UnitDriver, PlanDriver)):  # the engine knows these two shapes only
            raise TypeError(f"driver {name} is neither a UnitDriver nor a PlanDriver")
        built[name] = driver
    return built


def option_owner(attribute: str) -> str:
    """The name of the driver whose option `attribute` is, or "" when it is no driver's."""
    for name, cls in registry().items():
        if cls.option_prefix and attribute.startswith(cls.option_prefix):
            return name
    return ""


def check_driver_options(driver: BaseDriver, instance: Instance) -> None:
    """The instance's driver checks its own options; options of another driver are refused."""
    driver.check_options(instance)
    for key in instance.attributes:
        owner = option_owner(key)
        if owner and not (driver.option_prefix and key.startswith(driver.option_prefix)):
            raise InvalidInput(
                f"{key} is an option of driver {owner}; instance '{instance.name}' uses driver {instance.driver}"
            )
