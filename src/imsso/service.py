"""Use cases: what the faces (OCCI, JSON, CLI through them) may ask, checked and turned into
operations for the engine. Authorisation is decided here: a tenant sees only its own instances."""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import lifecycle, planning, policy, profiles, spec
from .auth import LocalTokens, Validator, check_headers
from .config import Settings
from .drivers import Driver
from .engine import Engine
from .model import (Conflict, Event, Forbidden, Instance, InstanceState, InvalidInput, NotFound, Operation, OperationKind, Subscriber,
                    Unit)
from .store import Store

DECISIONS_LOOKED_AT = 100  # per GET: verdicts are told on change, so the last ones of each policy
HEX32_RE = re.compile(r"^[0-9a-fA-F]{32}$")
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")  # \Z: "$" lets a trailing "\n" in
USER_RE = re.compile(r"^[A-Za-z0-9._~+-]{1,64}$")
_QUOTA_LOCK = threading.Lock()  # a quota check and the creation it allows, as one step


@dataclass
class Caller:
    tenant: str


class Service:
    def __init__(self, store: Store, engine: Engine, drivers: dict[str, Driver], settings: Settings,
                 validator: Validator, on_token: Callable[[str, str], None] | None = None,
                 figures: Callable[[str], dict] | None = None):
        self.store = store
        self.engine = engine
        self.drivers = drivers
        self.settings = settings
        self.validator = validator
        self.on_token = on_token  # drivers that act with the tenant's own token keep its latest
        self.figures = figures    # the runtime loop's latest figures of an instance

    # who
    def issue_token(self, admin_token: str | None, tenant: str, ttl: int | None) -> tuple[str, Any]:
        if not isinstance(self.validator, LocalTokens):
            raise InvalidInput("this orchestrator validates tokens with Keystone: get one from Keystone")
        return self.validator.issue(admin_token, tenant, ttl)

    def authenticate(self, token: str | None, tenant: str | None) -> Caller:
        token, tenant = check_headers(token, tenant)
        caller = Caller(self.validator.validate(token, tenant))
        if self.on_token is not None:
            self.on_token(caller.tenant, token)
        return caller

    # instances
    def create(self, caller: Caller, name: str, attributes: dict[str, Any] | None = None,
               profile: str | None = None, driver: str | None = None, sizes: dict[str, int] | None = None,
               then: tuple[OperationKind, ...] = ()) -> tuple[Instance, Operation | None]:
        """Initialise an instance; with `then`, run those operations one after the other."""
        if not NAME_RE.match(name):
            raise InvalidInput(f"instance name '{name}' must be 1-63 lowercase letters, digits or '-'")
        changes = spec.split(attributes or {})
        profile_name = profile or changes.create_only.get("imsso.profile") or self.settings.profile
        prof = profiles.load(profile_name)
        driver_name = driver or changes.create_only.get("imsso.driver") or self.settings.driver
        if driver_name not in self.drivers:
            raise InvalidInput(f"unknown driver '{driver_name}' (available: {', '.join(self.drivers)})")
        all_sizes = {**spec.default_sizes(prof), **changes.sizes, **(sizes or {})}
        spec.check_sizes(prof, all_sizes)
        domain = spec.check_domain(changes.create_only.get("imsso.domain", prof.domain))
        instance = Instance(
            id=str(uuid.uuid4()), tenant=caller.tenant, name=name, profile=prof.name,
            driver=driver_name, domain=domain, sizes=all_sizes, attributes=changes.attributes,
            test_subscribers=True if changes.test_subscribers is None else changes.test_subscribers,
            secret=secrets.token_hex(16))
        self._check_driver_options(instance)
        self._check_runtime(instance)
        if then:
            lifecycle.check_applicable(instance, then[0])  # refuse before anything is stored
        with _QUOTA_LOCK:
            self._check_quota(caller.tenant, None, all_sizes)
            self.store.create_instance(instance)
        self.store.add_event(instance.id, "lifecycle", f"initialised (profile {prof.name}, driver "
                             f"{driver_name}, domain {domain})", {"sizes": all_sizes})
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

    def profiles(self) -> list[profiles.Profile]:
        return [profiles.load(name) for name in profiles.available()]

    def list(self, caller: Caller) -> list[Instance]:
        return self.store.list_instances(caller.tenant)

    def units(self, instance: Instance) -> list[Unit]:
        return self.store.units(instance.id)

    # operations
    def act(self, caller: Caller, ref: str, kind: OperationKind) -> Operation:
        return self._submit(self.get(caller, ref), kind, {})

    def update(self, caller: Caller, ref: str, attributes: dict[str, Any],
               sizes: dict[str, int] | None = None) -> Operation:
        instance = self.get(caller, ref)
        changes = spec.split(attributes)
        if changes.create_only:
            raise InvalidInput(f"{', '.join(changes.create_only)} can only be set when the instance is "
                               "created: dispose it and create it again")
        fixed = sorted(set(changes.attributes) & getattr(self.drivers[instance.driver], "create_only", set()))
        if fixed and instance.state != InstanceState.INITIALISED:
            raise InvalidInput(f"{', '.join(fixed)} cannot change once units have addresses in it: "
                               "dispose of the instance and create it again")
        all_sizes = {**changes.sizes, **(sizes or {})}
        spec.check_sizes(profiles.load(instance.profile), all_sizes)
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
            raise InvalidInput("give at least one size, e.g. {\"scscf\": 2}")
        spec.check_sizes(profiles.load(instance.profile), sizes)
        self._check_quota(instance.tenant, instance, {**instance.sizes, **sizes})
        return self._submit(instance, OperationKind.SCALE, {"sizes": sizes})

    def plan(self, caller: Caller, ref: str, attributes: dict[str, Any] | None = None,
             sizes: dict[str, int] | None = None) -> dict[str, Any]:
        """What a deploy or an update with these changes would send to Heat, and how it differs
        from the live stack. Changes nothing."""
        instance = self.get(caller, ref)
        driver = self.drivers[instance.driver]
        if getattr(driver, "realises", "units") != "stack":
            raise InvalidInput(f"instance '{instance.name}' uses driver {instance.driver}: plans show Heat "
                               "stacks (driver openstack)")
        changes = spec.split(attributes or {})
        prof = profiles.load(instance.profile)
        proposed = dataclasses.replace(instance, attributes={**instance.attributes, **changes.attributes},
                                       sizes={**instance.sizes, **changes.sizes, **(sizes or {})})
        spec.check_sizes(prof, proposed.sizes)
        self._check_driver_options(proposed)
        keep, _extra, new = planning.desired_units(prof, proposed.sizes, self.store.units(instance.id))
        taken = self.store.addresses_in_use()
        for role, index in new:  # addresses as a deploy would choose them, reserved nowhere
            address = driver.allocate_address(proposed, taken)
            taken.add(address)
            keep.append(Unit(id="", instance_id=instance.id, name=planning.unit_name(role, index),
                             role=role, index=index, address=address))
        plan = planning.build(proposed, prof, keep, driver.layout)
        request = driver.request(proposed, prof, plan, self.store.subscribers(instance.id))
        return {"instance": instance.name, "stack_name": request.name, "template": request.template,
                "environment": request.environment, "files": sorted(request.files),
                **driver.preview(proposed, request)}

    def _check_quota(self, tenant: str, instance: Instance | None, sizes: dict[str, int]) -> None:
        """The tenant's quotas (0: none): live instances, and units over them with `instance` at `sizes`
        (a new one when None). Refused with the quota, the use and the setting that bounds it."""
        others = [i for i in self.store.list_instances(tenant) if instance is None or i.id != instance.id]
        limit = self.settings.quota_instances
        if instance is None and limit and len(others) >= limit:
            raise Forbidden(f"quota reached: tenant {tenant} has {len(others)} of {limit} instances "
                            "(IMSSO_QUOTA_INSTANCES): dispose of one, or ask the operator to raise it",
                            {"quota": "instances", "used": len(others), "limit": limit,
                             "setting": "IMSSO_QUOTA_INSTANCES"})
        used = sum(sum(i.sizes.values()) for i in others)
        wanted, limit = sum(sizes.values()), self.settings.quota_units
        if limit and used + wanted > limit:
            raise Forbidden(f"quota reached: tenant {tenant} would have {used + wanted} units, {used} in use "
                            f"elsewhere and {wanted} here, of {limit} (IMSSO_QUOTA_UNITS): size down or "
                            "dispose of an instance, or ask the operator to raise it",
                            {"quota": "units", "used": used, "requested": wanted, "limit": limit,
                             "setting": "IMSSO_QUOTA_UNITS"})

    def _check_runtime(self, instance: Instance) -> None:
        """Policy overrides and scaling bounds, refused with what is accepted."""
        prof = profiles.load(instance.profile)
        policy.overridden(prof.policies, instance.attributes)
        for key in instance.attributes:
            if key.startswith(policy.BOUND_PREFIX):
                role_name, _, end = key[len(policy.BOUND_PREFIX):].rpartition(".")
                if end not in ("min", "max"):
                    raise InvalidInput(f"unknown attribute {key}: accepted are "
                                       f"{policy.BOUND_PREFIX}<role>.min and .max")
                role = prof.role(role_name)
                policy.bounds(role_name, role.min, role.max, instance.attributes)

    def _check_driver_options(self, instance: Instance) -> None:
        """Options of the instance's driver, refused with what is accepted before anything runs."""
        names = [k for k in instance.attributes if k.startswith(spec.DRIVER_PREFIX)]
        driver = self.drivers[instance.driver]
        if hasattr(driver, "options"):
            driver.options(instance)
        elif names:
            raise InvalidInput(f"{names[0]} is an option of driver openstack; instance "
                               f"'{instance.name}' uses driver {instance.driver}")

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

    def operations(self, instance: Instance) -> list[Operation]:
        return self.store.operations(instance_id=instance.id)

    def events(self, caller: Caller, ref: str, since: int = 0, kind: str | None = None) -> list[Event]:
        events = self.store.events(self.get(caller, ref).id, since)
        return [e for e in events if e.kind == kind] if kind else events

    def metrics(self, caller: Caller, ref: str) -> dict[str, dict[str, float]]:
        """The latest figures of the instance's units, as the runtime loop saw them."""
        instance = self.get(caller, ref)
        return self.figures(instance.id) if self.figures else {}

    def decisions(self, instance: Instance) -> dict[str, str]:
        """The last decision told per policy (and for healing), from the newest events only."""
        latest: dict[str, str] = {}
        for event in self.store.events(instance.id, kind="decision", limit=DECISIONS_LOOKED_AT,
                                       newest_first=True):
            key = event.data.get("policy") or ("heal" if event.message.startswith("heal") else "other")
            latest.setdefault(key, event.message)
        return latest

    def _submit(self, instance: Instance, kind: OperationKind, params: dict[str, Any]) -> Operation:
        return self.engine.request(instance, kind, params)

    # subscribers: data of the instance, pushed to its units at once (no operation needed)
    def subscribers(self, caller: Caller, ref: str) -> list[Subscriber]:
        """Without their secrets: what was set is never given back (only the kinds it has)."""
        return self.store.subscribers(self.get(caller, ref).id, secrets=False)

    def subscriber(self, caller: Caller, ref: str, user: str) -> Subscriber:
        instance = self.get(caller, ref)
        for sub in self.store.subscribers(instance.id, secrets=False):
            if sub.user == user:
                return sub
        raise NotFound(f"no subscriber '{user}' in instance {instance.name}")

    def put_subscriber(self, caller: Caller, ref: str, user: str, password: str | None,
                       domain: str | None = None, k: str | None = None, opc: str | None = None,
                       amf: str | None = None) -> tuple[Subscriber, bool]:
        instance = self.get(caller, ref)
        if not USER_RE.match(user or ""):
            raise InvalidInput(f"user '{user}' must be 1-64 of letters, digits and . _ ~ + -")
        if domain is not None and spec.check_domain(domain) != instance.domain:
            raise InvalidInput(f"domain must be the instance's domain {instance.domain}")
        k, opc = _aka_keys(k, opc, profiles.load(instance.profile))
        if password is not None or not k:
            if not password or not 8 <= len(password) <= 64:
                raise InvalidInput("password must have 8 to 64 characters"
                                   + (" (or give k and opc for AKA)" if k is None else ""))
            if not password.isascii() or not password.isprintable():
                # it travels in SQL, JSON and cloud-init files: printable ASCII only
                raise InvalidInput("password must be printable ASCII (letters, digits, punctuation "
                                   "and space): no control or non-ASCII characters")
        if amf is not None and not re.fullmatch(r"[0-9a-fA-F]{4}", amf):
            raise InvalidInput("amf must be 4 hexadecimal digits (16 bits), e.g. 8000")
        sub = Subscriber(instance.id, user, instance.domain, password or "", k, opc, (amf or "8000").lower())
        with self.engine.subscriber_lock(instance.id):
            previous = next((s for s in self.store.subscribers(instance.id) if s.user == user), None)
            created = self.store.put_subscriber(sub)
            try:
                self._push_subscribers(instance)
            except Exception:  # not half done: the store goes back to what the units have
                if previous:
                    self.store.put_subscriber(previous)
                else:
                    self.store.delete_subscriber(instance.id, user, instance.domain)
                raise
        return sub, created

    def delete_subscriber(self, caller: Caller, ref: str, user: str) -> None:
        instance = self.get(caller, ref)
        with self.engine.subscriber_lock(instance.id):
            previous = next((s for s in self.store.subscribers(instance.id) if s.user == user), None)
            if previous is None or not self.store.delete_subscriber(instance.id, user, instance.domain):
                raise NotFound(f"no subscriber '{user}' in instance {instance.name}")
            try:
                self._push_subscribers(instance)
            except Exception:
                self.store.put_subscriber(previous)
                raise

    def _push_subscribers(self, instance: Instance) -> None:
        """Write the subscribers to the units (the caller holds the instance's subscriber lock)."""
        current = self.store.get_instance(instance.id)
        if current.state in (InstanceState.DISPOSING, InstanceState.DISPOSED):
            raise Conflict(f"instance '{instance.name}' is being disposed of")
        if not self.store.units(instance.id):
            return  # the table is written when the units are deployed
        subs = self.store.subscribers(instance.id)
        self.drivers[instance.driver].sync_subscribers(instance, profiles.load(instance.profile), subs)
        self.store.add_event(instance.id, "subscribers", f"{len(subs)} subscriber(s) pushed to the units")


def _aka_keys(k: str | None, opc: str | None, prof: profiles.Profile) -> tuple[str, str]:
    """K and OPc for AKA, both or neither, 128 bits each, and only where the profile does AKA."""
    if not k and not opc:
        return "", ""
    if "aka" not in prof.auth:
        raise InvalidInput(f"profile {prof.name} authenticates with SIP Digest only: give a password, "
                           "not k and opc (AKA needs an HSS: profile ims)")
    if not (k and opc and HEX32_RE.match(k) and HEX32_RE.match(opc)):
        raise InvalidInput("k and opc must both be 32 hexadecimal digits (128 bits)")
    return k.lower(), opc.lower()
