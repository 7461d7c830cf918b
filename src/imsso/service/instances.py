"""Instances: created, found, changed, previewed and disposed of, each change an operation for the
engine. Authorisation is decided here: a tenant sees only its own instances."""

from __future__ import annotations

import builtins
import dataclasses
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

from .. import lifecycle, planning, policy, profiles, spec
from ..drivers import PlanDriver, check_driver_options, registry
from ..model import (
    Event,
    Forbidden,
    Instance,
    InstanceState,
    InvalidInput,
    NotApplicableHere,
    NotFound,
    Operation,
    OperationKind,
    Unit,
)
from .common import NAME_RE, Caller, Context

DECISIONS_LOOKED_AT = 100  # per GET: verdicts are told on change, so the last ones of each policy
_QUOTA_LOCK = threading.Lock()  # a quota check and the creation it allows, as one step


class Instances:
    def __init__(self, context: Context, figures: Callable[[str], dict] | None = None):
        self.context = context
        self.store = context.store
        self.drivers = context.drivers
        self.settings = context.settings
        self.figures = figures  # the runtime loop's latest figures of an instance

    def create(
        self,
        caller: Caller,
        name: str,
        attributes: dict[str, Any] | None = None,
        profile: str | None = None,
        driver: str | None = None,
        sizes: dict[str, int] | None = None,
        then: tuple[OperationKind, ...] = (),
    ) -> tuple[Instance, Operation | None]:
        """Initialise an instance; with `then`, run those operations one after the other."""
        if not NAME_RE.match(name):
            raise InvalidInput(f"instance name '{name}' must be 1-63 lowercase letters, digits or '-'")
        changes = self._split(attributes or {})
        profile_name = profile or changes.create_only.get("imsso.profile") or self.settings.profile
        prof = self.context.profiles.load(profile_name)
        driver_name = driver or changes.create_only.get("imsso.driver") or self.settings.driver
        if driver_name not in self.drivers:
            raise InvalidInput(f"unknown driver '{driver_name}' (available: {', '.join(self.drivers)})")
        all_sizes = {**spec.default_sizes(prof), **changes.sizes, **(sizes or {})}
        spec.check_sizes(prof, all_sizes)
        domain = spec.check_domain(changes.create_only.get("imsso.domain", prof.domain))
        instance = Instance(
            id=str(uuid.uuid4()),
            tenant=caller.tenant,
            name=name,
            profile=prof.name,
            driver=driver_name,
            domain=domain,
            sizes=all_sizes,
            attributes=changes.attributes,
            test_subscribers=True if changes.test_subscribers is None else changes.test_subscribers,
            secret=secrets.token_hex(16),
        )
        self._check_driver_options(instance)
        self._check_runtime(instance)
        if then:
            lifecycle.check_applicable(instance, then[0])  # refuse before anything is stored
        with _QUOTA_LOCK:
            self._check_quota(caller.tenant, None, all_sizes)
            self.store.create_instance(instance)
        self.store.add_event(
            instance.id,
            "lifecycle",
            f"initialised (profile {prof.name}, driver {driver_name}, domain {domain})",
            {"sizes": all_sizes},
        )
        op = self._submit(instance, then[0], {"then": [k.value for k in then[1:]]}) if then else None
        return self.store.get_instance(instance.id), op

    def get(self, caller: Caller, ref: str) -> Instance:
        """By id or by name, only within the caller's tenant (another tenant's is 'not found')."""
        found = self.store.find_instance(caller.tenant, ref)
        if found is None:
            try:
                found = self.store.get_instance(ref)
            except NotFound:
                found = None
        if found is None or found.tenant != caller.tenant or found.state.value == "disposed":
            raise NotFound(f"no instance '{ref}' for tenant {caller.tenant}")
        return found

    def refresh(self, instance: Instance) -> Instance:
        """The instance as stored now, even when an operation just disposed of it."""
        return self.store.get_instance(instance.id)

    def failed_operation(self, instance: Instance) -> Operation | None:
        return self.store.get_operation(instance.failed_operation_id) if instance.failed_operation_id else None

    def profiles(self) -> builtins.list[profiles.Profile]:
        return [self.context.profiles.load(name) for name in self.context.profiles.available()]

    def list(self, caller: Caller) -> builtins.list[Instance]:
        return self.store.list_instances(caller.tenant)

    def units(self, instance: Instance) -> builtins.list[Unit]:
        return self.store.units(instance.id)

    # operations
    def act(self, caller: Caller, ref: str, kind: OperationKind) -> Operation:
        return self._submit(self.get(caller, ref), kind, {})

    def update(
        self, caller: Caller, ref: str, attributes: dict[str, Any], sizes: dict[str, int] | None = None
    ) -> Operation:
        instance = self.get(caller, ref)
        changes = self._split(attributes)
        if changes.create_only:
            raise InvalidInput(
                f"{', '.join(changes.create_only)} can only be set when the instance is "
                "created: dispose it and create it again"
            )
        fixed = sorted(set(changes.attributes) & self.drivers[instance.driver].create_only)
        if fixed and instance.state != InstanceState.INITIALISED:
            raise InvalidInput(
                f"{', '.join(fixed)} cannot change once units have addresses in it: "
                "dispose of the instance and create it again"
            )
        all_sizes = {**changes.sizes, **(sizes or {})}
        spec.check_sizes(self.context.profiles.load(instance.profile), all_sizes)
        self._check_quota(instance.tenant, instance, {**instance.sizes, **all_sizes})
        if not all_sizes and not changes.attributes and changes.test_subscribers is None:
            raise InvalidInput("nothing to update: give attributes (X-OCCI-Attribute) or sizes")
        proposed = dataclasses.replace(instance, attributes={**instance.attributes, **changes.attributes})
        self._check_driver_options(proposed)
        self._check_runtime(proposed)
        params: dict[str, Any] = {"attributes": changes.attributes, "sizes": all_sizes}
        if changes.test_subscribers is not None:
            params["test_subscribers"] = changes.test_subscribers
        kind = OperationKind.SCALE if all_sizes and not changes.attributes else OperationKind.UPDATE
        return self._submit(instance, kind, params)

    def scale(self, caller: Caller, ref: str, sizes: dict[str, int]) -> Operation:
        instance = self.get(caller, ref)
        if not sizes:
            raise InvalidInput('give at least one size, e.g. {"scscf": 2}')
        spec.check_sizes(self.context.profiles.load(instance.profile), sizes)
        self._check_quota(instance.tenant, instance, {**instance.sizes, **sizes})
        return self._submit(instance, OperationKind.SCALE, {"sizes": sizes})

    def plan(
        self, caller: Caller, ref: str, attributes: dict[str, Any] | None = None, sizes: dict[str, int] | None = None
    ) -> dict[str, Any]:
        """What a deploy or an update with these changes would send to Heat, and how it differs
        from the live stack. Changes nothing."""
        instance = self.get(caller, ref)
        driver = self.drivers[instance.driver]
        if not (isinstance(driver, PlanDriver) and driver.capabilities.preview):
            shown = [d for d in self.drivers.values() if isinstance(d, PlanDriver) and d.capabilities.preview]
            raise NotApplicableHere(
                f"instance '{instance.name}' uses driver {instance.driver}: plans show "
                + ("; ".join(f"{d.plan_noun} (driver {d.name})" for d in shown) or "nothing on this orchestrator")
            )
        changes = self._split(attributes or {})
        prof = self.context.profiles.load(instance.profile)
        proposed = dataclasses.replace(
            instance,
            attributes={**instance.attributes, **changes.attributes},
            sizes={**instance.sizes, **changes.sizes, **(sizes or {})},
        )
        spec.check_sizes(prof, proposed.sizes)
        self._check_driver_options(proposed)
        reserved = planning.reserve_units(  # as a deploy would reserve them, stored nowhere
            prof,
            instance.id,
            proposed.sizes,
            self.store.units(instance.id),
            self.store.addresses_in_use(),
            lambda taken: driver.allocate_address(proposed, taken),
        )
        plan = planning.build(proposed, prof, reserved.keep, driver.layout)
        request = driver.request(proposed, prof, plan, self.store.subscribers(instance.id))
        return {
            "instance": instance.name,
            "stack_name": request.name,
            "template": request.template,
            "environment": request.environment,
            "files": sorted(request.files),
            **driver.preview(proposed, request),
        }

    def dispose(self, caller: Caller, ref: str) -> Operation:
        """Accepted whatever runs: the running operation stops at its next step and the dispose
        follows; asked again, the same dispose is returned (see Engine.request)."""
        return self._submit(self.get(caller, ref), OperationKind.DISPOSE, {})

    def operation(self, caller: Caller, op_id: str) -> Operation:
        op = self.store.get_operation(op_id)
        instance = self.store.get_instance(op.instance_id)
        if instance.tenant != caller.tenant:
            raise NotFound(f"no operation {op_id}")
        return op

    def operations(self, instance: Instance) -> builtins.list[Operation]:
        return self.store.operations(instance_id=instance.id)

    def events(self, caller: Caller, ref: str, since: int = 0, kind: str | None = None) -> builtins.list[Event]:
        events = self.store.events(self.get(caller, ref).id, since)
        return [e for e in events if e.kind == kind] if kind else events

    def metrics(self, caller: Caller, ref: str) -> dict[str, dict[str, float]]:
        """The latest figures of the instance's units, as the runtime loop saw them."""
        instance = self.get(caller, ref)
        return self.figures(instance.id) if self.figures else {}

    def decisions(self, instance: Instance) -> dict[str, str]:
        """The last decision told per policy (and for healing), from the newest events only."""
        latest: dict[str, str] = {}
        for event in self.store.events(instance.id, kind="decision", limit=DECISIONS_LOOKED_AT, newest_first=True):
            key = event.data.get("policy") or ("heal" if event.message.startswith("heal") else "other")
            latest.setdefault(key, event.message)
        return latest

    # checks: each attribute namespace in one place (spec.py, policy.py, the driver)
    def _split(self, attributes: dict[str, Any]) -> spec.Changes:
        prefixes = tuple(cls.option_prefix for cls in registry().values() if cls.option_prefix)
        return spec.split(attributes, driver_prefixes=prefixes)

    def _check_quota(self, tenant: str, instance: Instance | None, sizes: dict[str, int]) -> None:
        """The tenant's quotas (0: none): live instances, and units over them with `instance` at `sizes`
        (a new one when None). Refused with the quota, the use and the setting that bounds it."""
        others = [i for i in self.store.list_instances(tenant) if instance is None or i.id != instance.id]
        limit = self.settings.quota_instances
        if instance is None and limit and len(others) >= limit:
            raise Forbidden(
                f"quota reached: tenant {tenant} has {len(others)} of {limit} instances "
                "(IMSSO_QUOTA_INSTANCES): dispose of one, or ask the operator to raise it",
                {"quota": "instances", "used": len(others), "limit": limit, "setting": "IMSSO_QUOTA_INSTANCES"},
            )
        used = sum(sum(i.sizes.values()) for i in others)
        wanted, limit = sum(sizes.values()), self.settings.quota_units
        if limit and used + wanted > limit:
            raise Forbidden(
                f"quota reached: tenant {tenant} would have {used + wanted} units, {used} in use "
                f"elsewhere and {wanted} here, of {limit} (IMSSO_QUOTA_UNITS): size down or "
                "dispose of an instance, or ask the operator to raise it",
                {"quota": "units", "used": used, "requested": wanted, "limit": limit, "setting": "IMSSO_QUOTA_UNITS"},
            )

    def _check_runtime(self, instance: Instance) -> None:
        """Policy overrides and scaling bounds, refused with what is accepted."""
        policy.check_overrides(self.context.profiles.load(instance.profile), instance.attributes)

    def _check_driver_options(self, instance: Instance) -> None:
        """Options of the instance's driver, refused with what is accepted before anything runs."""
        check_driver_options(self.drivers[instance.driver], instance)

    def _submit(self, instance: Instance, kind: OperationKind, params: dict[str, Any]) -> Operation:
        return self.context.engine.request(instance, kind, params)
