"""Subscribers: data of an instance, pushed to its units at once (no operation needed)."""

from __future__ import annotations

import re

from .. import profiles, spec
from ..model import Conflict, Instance, InstanceState, InvalidInput, NotFound, Subscriber
from .common import HEX32_RE, USER_RE, Caller, Context
from .instances import Instances


class Subscribers:
    def __init__(self, context: Context, instances: Instances):
        self.context = context
        self.store = context.store
        self.instances = instances  # who may see which instance

    def subscribers(self, caller: Caller, ref: str) -> list[Subscriber]:
        """Without their secrets: what was set is never given back (only the kinds it has)."""
        return self.store.subscribers(self.instances.get(caller, ref).id, secrets=False)

    def subscriber(self, caller: Caller, ref: str, user: str) -> Subscriber:
        instance = self.instances.get(caller, ref)
        for sub in self.store.subscribers(instance.id, secrets=False):
            if sub.user == user:
                return sub
        raise NotFound(f"no subscriber '{user}' in instance {instance.name}")

    def put_subscriber(
        self,
        caller: Caller,
        ref: str,
        user: str,
        password: str | None,
        domain: str | None = None,
        k: str | None = None,
        opc: str | None = None,
        amf: str | None = None,
    ) -> tuple[Subscriber, bool]:
        instance = self.instances.get(caller, ref)
        if not USER_RE.match(user or ""):
            raise InvalidInput(f"user '{user}' must be 1-64 of letters, digits and . _ ~ + -")
        if domain is not None and spec.check_domain(domain) != instance.domain:
            raise InvalidInput(f"domain must be the instance's domain {instance.domain}")
        k, opc = _aka_keys(k, opc, self.context.profiles.load(instance.profile))
        if password is not None or not k:
            if not password or not 8 <= len(password) <= 64:
                raise InvalidInput(
                    "password must have 8 to 64 characters" + (" (or give k and opc for AKA)" if k is None else "")
                )
            if not password.isascii() or not password.isprintable():
                # it travels in SQL, JSON and cloud-init files: printable ASCII only
                raise InvalidInput(
                    "password must be printable ASCII (letters, digits, punctuation "
                    "and space): no control or non-ASCII characters"
                )
        if amf is not None and not re.fullmatch(r"[0-9a-fA-F]{4}", amf):
            raise InvalidInput("amf must be 4 hexadecimal digits (16 bits), e.g. 8000")
        sub = Subscriber(instance.id, user, instance.domain, password or "", k, opc, (amf or "8000").lower())
        with self.context.engine.subscriber_lock(instance.id):
            previous = next((s for s in self.store.subscribers(instance.id) if s.user == user), None)
            created = self.store.put_subscriber(sub)
            try:
                self._push(instance)
            except Exception:  # not half done: the store goes back to what the units have
                if previous:
                    self.store.put_subscriber(previous)
                else:
                    self.store.delete_subscriber(instance.id, user, instance.domain)
                raise
        return sub, created

    def delete_subscriber(self, caller: Caller, ref: str, user: str) -> None:
        instance = self.instances.get(caller, ref)
        with self.context.engine.subscriber_lock(instance.id):
            previous = next((s for s in self.store.subscribers(instance.id) if s.user == user), None)
            if previous is None or not self.store.delete_subscriber(instance.id, user, instance.domain):
                raise NotFound(f"no subscriber '{user}' in instance {instance.name}")
            try:
                self._push(instance)
            except Exception:
                self.store.put_subscriber(previous)
                raise

    def _push(self, instance: Instance) -> None:
        """Write the subscribers to the units (the caller holds the instance's subscriber lock)."""
        current = self.store.get_instance(instance.id)
        if current.state in (InstanceState.DISPOSING, InstanceState.DISPOSED):
            raise Conflict(f"instance '{instance.name}' is being disposed of")
        if not self.store.units(instance.id):
            return  # the table is written when the units are deployed
        subs = self.store.subscribers(instance.id)
        self.context.drivers[instance.driver].sync_subscribers(
            instance, self.context.profiles.load(instance.profile), subs
        )
        self.store.add_event(instance.id, "subscribers", f"{len(subs)} subscriber(s) pushed to the units")


def _aka_keys(k: str | None, opc: str | None, prof: profiles.Profile) -> tuple[str, str]:
    """K and OPc for AKA, both or neither, 128 bits each, and only where the profile does AKA."""
    if not k and not opc:
        return "", ""
    if "aka" not in prof.auth:
        raise InvalidInput(
            f"profile {prof.name} authenticates with SIP Digest only: give a password, "
            "not k and opc (AKA needs an HSS: profile ims)"
        )
    if not (k and opc and HEX32_RE.match(k) and HEX32_RE.match(opc)):
        raise InvalidInput("k and opc must both be 32 hexadecimal digits (128 bits)")
    return k.lower(), opc.lower()
