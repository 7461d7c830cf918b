"""The JSON face under /v1: the same resources as OCCI, with an OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, Field

from ...model import InvalidInput, OperationKind
from ...service import Caller, Service
from .. import views

router = APIRouter(prefix="/v1")


def service(request: Request) -> Service:
    return request.app.state.service


def caller(request: Request,
           x_auth_token: Annotated[str | None, Header()] = None,
           x_tenant_name: Annotated[str | None, Header()] = None) -> Caller:
    return service(request).authenticate(x_auth_token, x_tenant_name)


Svc = Annotated[Service, Depends(service)]
Who = Annotated[Caller, Depends(caller)]


class InstanceCreate(BaseModel):
    name: str = Field("default", description="unique among the tenant's live instances")
    profile: str | None = Field(None, description="profile name; the server's default if absent")
    driver: str | None = Field(None, description="where the IMS runs: local (default) or another driver")
    sizes: dict[str, int] = Field(default_factory=dict, description="units per role, e.g. {\"scscf\": 2}")
    attributes: dict[str, Any] = Field(default_factory=dict,
                                       description="inputs such as mcn.endpoint.maas or imsso.domain")
    actions: list[str] = Field(default_factory=lambda: ["deploy", "provision"],
                               description="operations to run one after the other; [] only initialises")


class InstancePatch(BaseModel):
    sizes: dict[str, int] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)


class SubscriberIn(BaseModel):
    user: str | None = None
    domain: str | None = None
    password: str | None = Field(None, description="SIP Digest password (8-64 characters)")
    k: str | None = Field(None, description="AKA: the USIM's K, 32 hex digits (profiles with an HSS)")
    opc: str | None = Field(None, description="AKA: the operator key OPc, 32 hex digits")
    amf: str | None = Field(None, description="AKA: the vectors' AMF, 4 hex digits (default 8000)")


class TokenRequest(BaseModel):
    tenant: str
    ttl: int | None = Field(None, description="seconds; the server's default if absent")


def accepted(response: Response, op) -> dict[str, Any]:
    response.status_code = 202
    response.headers["Location"] = f"/v1/operations/{op.id}"
    return views.operation_json(op)


def _instance(svc: Service, instance) -> dict[str, Any]:
    return views.instance_json(instance, svc.units(instance), svc.failed_operation(instance))


@router.get("/health", tags=["service"])
def health() -> dict[str, str]:
    """Liveness, without authentication (for `imsso up` and load balancers)."""
    return {"status": "ok"}


@router.post("/tokens", status_code=201, tags=["auth"])
def issue_token(body: TokenRequest, svc: Svc,
                x_auth_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Issue a token for a tenant; needs the orchestrator's admin token (local tokens only)."""
    token, expires = svc.issue_token(x_auth_token, body.tenant, body.ttl)
    return {"token": token, "tenant": body.tenant, "expires_at": expires.isoformat()}


@router.get("/profiles", tags=["profiles"])
def list_profiles(svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [{"name": p.name, "description": p.description, "domain": p.domain,
             "roles": {r.name: {"min": r.min, "default": r.default, "max": r.max} for r in p.roles.values()}}
            for p in svc.profiles()]


@router.get("/instances", tags=["instances"])
def list_instances(svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [_instance(svc, i) for i in svc.list(who)]


@router.post("/instances", status_code=202, tags=["instances"])
def create_instance(body: InstanceCreate, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    """Create an instance and run `actions` (deploy then provision by default)."""
    if body.actions not in ([], ["deploy"], ["deploy", "provision"]):
        raise InvalidInput(f"actions must be [], [\"deploy\"] or [\"deploy\", \"provision\"], "
                           f"not {body.actions}")
    then = tuple(OperationKind(a) for a in body.actions)
    instance, op = svc.create(who, body.name, body.attributes, body.profile, body.driver, body.sizes, then)
    response.headers["Content-Location"] = f"/v1/instances/{instance.id}"
    if op is None:
        response.status_code = 201
        response.headers["Location"] = f"/v1/instances/{instance.id}"
        return {"instance": _instance(svc, instance), "operation": None}
    response.headers["Location"] = f"/v1/operations/{op.id}"
    return {"instance": _instance(svc, instance), "operation": views.operation_json(op)}


@router.get("/instances/{ref}", tags=["instances"])
def get_instance(ref: str, svc: Svc, who: Who) -> dict[str, Any]:
    return _instance(svc, svc.get(who, ref))


@router.patch("/instances/{ref}", status_code=202, tags=["instances"])
def patch_instance(ref: str, body: InstancePatch, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    return accepted(response, svc.update(who, ref, body.attributes, body.sizes))


@router.post("/instances/{ref}/plan", tags=["instances"])
def plan_instance(ref: str, svc: Svc, who: Who, body: InstancePatch | None = None) -> dict[str, Any]:
    """The template and environment a deploy or an update with these changes would send, Heat's
    preview of what it would add, replace, update and delete, and the diff from the live stack.
    Nothing is changed."""
    body = body or InstancePatch()
    return svc.plan(who, ref, body.attributes, body.sizes)


@router.delete("/instances/{ref}", status_code=202, tags=["instances"])
def delete_instance(ref: str, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    return accepted(response, svc.dispose(who, ref))


@router.post("/instances/{ref}/actions/{action}", status_code=202, tags=["instances"])
def run_action(ref: str, action: str, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    if action not in ("deploy", "provision"):
        raise InvalidInput(f"unknown action '{action}': accepted are deploy, provision")
    return accepted(response, svc.act(who, ref, OperationKind(action)))


@router.get("/instances/{ref}/operations", tags=["operations"])
def instance_operations(ref: str, svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [views.operation_json(o) for o in svc.operations(svc.get(who, ref))]


@router.get("/instances/{ref}/events", tags=["instances"])
def instance_events(ref: str, svc: Svc, who: Who, since: int = 0, kind: str | None = None
                    ) -> list[dict[str, Any]]:
    """Lifecycle steps, decisions and failures, in order; `since` is the last event id seen."""
    return [views.event_json(e) for e in svc.events(who, ref, since, kind)]


@router.get("/instances/{ref}/metrics", tags=["instances"])
def instance_metrics(ref: str, svc: Svc, who: Who) -> dict[str, dict[str, float]]:
    """The latest figures of each unit as the runtime loop sees them (counters, gauges, rates)."""
    return svc.metrics(who, ref)


@router.get("/instances/{ref}/subscribers", tags=["subscribers"])
def list_subscribers(ref: str, svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [views.subscriber_json(s) for s in svc.subscribers(who, ref)]


@router.post("/instances/{ref}/subscribers", status_code=201, tags=["subscribers"])
def add_subscriber(ref: str, body: SubscriberIn, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    if not body.user:
        raise InvalidInput("user is required")
    sub, created = svc.put_subscriber(who, ref, body.user, body.password, body.domain, body.k, body.opc, body.amf)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/instances/{ref}/subscribers/{sub.user}"
    return views.subscriber_json(sub)


@router.get("/instances/{ref}/subscribers/{user}", tags=["subscribers"])
def get_subscriber(ref: str, user: str, svc: Svc, who: Who) -> dict[str, Any]:
    """One subscriber with its password (the tenant's own test credentials)."""
    return views.subscriber_json(svc.subscriber(who, ref, user), with_password=True)


@router.put("/instances/{ref}/subscribers/{user}", tags=["subscribers"])
def put_subscriber(ref: str, user: str, body: SubscriberIn, response: Response, svc: Svc,
                   who: Who) -> dict[str, Any]:
    if body.user and body.user != user:
        raise InvalidInput(f"user in the body ({body.user}) differs from the path ({user})")
    sub, created = svc.put_subscriber(who, ref, user, body.password, body.domain, body.k, body.opc, body.amf)
    response.status_code = 201 if created else 200
    return views.subscriber_json(sub)


@router.delete("/instances/{ref}/subscribers/{user}", status_code=204, tags=["subscribers"])
def delete_subscriber(ref: str, user: str, svc: Svc, who: Who) -> Response:
    svc.delete_subscriber(who, ref, user)
    return Response(status_code=204)


@router.get("/operations/{op_id}", tags=["operations"])
def get_operation(op_id: str, svc: Svc, who: Who) -> dict[str, Any]:
    return views.operation_json(svc.operation(who, op_id))
