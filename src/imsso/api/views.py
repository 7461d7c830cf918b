"""One view of an instance for both faces: OCCI renders these attributes, JSON nests them."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..model import Event, Instance, Operation, Subscriber, Unit

LOCAL_NET = "local"


def endpoints(instance: Instance, units: list[Unit]) -> dict[str, str]:
    """`mcn.endpoint.<unit>.<net>.<public|private>` as the original named its Heat outputs: the
    stack's outputs where a driver made one, else the local units' addresses."""
    if instance.driver != "local":
        return dict(sorted(instance.outputs.items()))
    return {f"mcn.endpoint.{u.name}.{LOCAL_NET}.private": u.address for u in units}


def attributes(
    instance: Instance, units: list[Unit], failed: Operation | None, decisions: dict[str, str] | None = None
) -> dict[str, Any]:
    """The flat attribute set of an instance, as OCCI shows it."""
    attrs: dict[str, Any] = {
        "occi.core.id": instance.id,
        "occi.mcn.stack.state": instance.stack_state,
        "mcn.service.state": instance.state.value,
    }
    if instance.stack_id:
        attrs["occi.mcn.stack.id"] = instance.stack_id
    elif instance.stack_state != "INIT_COMPLETE" and instance.driver == "local":
        attrs["occi.mcn.stack.id"] = instance.id  # the local driver's "stack" is the instance
    attrs.update(endpoints(instance, units))
    attrs.update(instance.attributes)
    attrs.update(
        {
            "imsso.name": instance.name,
            "imsso.profile": instance.profile,
            "imsso.driver": instance.driver,
            "imsso.domain": instance.domain,
            "imsso.test_subscribers": instance.test_subscribers,
        }
    )
    attrs.update({f"imsso.size.{role}": n for role, n in sorted(instance.sizes.items())})
    for unit in units:
        attrs[f"imsso.unit.{unit.name}.state"] = unit.state.value
    if instance.current_operation_id:
        attrs["imsso.operation"] = instance.current_operation_id
    for name, message in sorted((decisions or {}).items()):
        attrs[f"imsso.decision.{name}"] = message  # the runtime's last word per policy
    if failed is not None and failed.error is not None:
        attrs["imsso.error"] = f"{failed.kind.value} failed at '{failed.error.step}': {failed.error.message}"
    return attrs


def instance_json(instance: Instance, units: list[Unit], failed: Operation | None) -> dict[str, Any]:
    return {
        "id": instance.id,
        "name": instance.name,
        "tenant": instance.tenant,
        "profile": instance.profile,
        "driver": instance.driver,
        "domain": instance.domain,
        "state": instance.state.value,
        "stack_state": instance.stack_state,
        "stack_id": instance.stack_id or None,
        "provisioned": instance.provisioned,
        "sizes": instance.sizes,
        "attributes": instance.attributes,
        "test_subscribers": instance.test_subscribers,
        "endpoints": endpoints(instance, units),
        "units": [unit_json(u) for u in units],
        "current_operation": instance.current_operation_id,
        "failed_operation": operation_json(failed) if failed else None,
        "created_at": instance.created_at.isoformat(),
        "updated_at": instance.updated_at.isoformat(),
    }


def unit_json(unit: Unit) -> dict[str, Any]:
    return {
        "name": unit.name,
        "role": unit.role,
        "index": unit.index,
        "address": unit.address,
        "state": unit.state.value,
        "pid": unit.pid,
        "detail": unit.detail,
    }


def operation_json(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "instance_id": op.instance_id,
        "kind": op.kind.value,
        "state": op.state.value,
        "params": op.params,
        "steps": [dataclasses.asdict(s) for s in op.steps],
        "error": dataclasses.asdict(op.error) if op.error else None,
        "attempts": op.attempts,
        "created_at": op.created_at.isoformat(),
        "started_at": op.started_at.isoformat() if op.started_at else None,
        "finished_at": op.finished_at.isoformat() if op.finished_at else None,
    }


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": event.time.isoformat(),
        "kind": event.kind,
        "message": event.message,
        "data": event.data,
    }


def subscriber_json(sub: Subscriber) -> dict[str, Any]:
    """Who it is and which credentials it has; never a password, HA1, K or OPc once set."""
    # impi/impu: the private and public identities an HSS knows the subscriber by.
    auth = sub.auth
    data: dict[str, Any] = {
        "user": sub.user,
        "domain": sub.domain,
        "aor": sub.aor,
        "impi": f"{sub.user}@{sub.domain}",
        "impu": sub.aor,
        "auth": auth,
        "digest": "digest" in auth,
        "aka": "aka" in auth,
    }
    if "aka" in auth:
        data["amf"] = sub.amf  # not a secret: the vectors' management field
    return data
