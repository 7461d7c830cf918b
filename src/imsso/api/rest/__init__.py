"""The JSON face under /v1: the same resources as OCCI, with an OpenAPI document.

The document states the rules the server enforces (name, user and key patterns, actions, ranges),
taken from the service and spec modules themselves, and every error status an operation may answer,
so a client (or a fuzzer) can trust it both ways: what it allows is accepted, what it forbids is
refused with a 4xx and the JSON error below.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.config import JsonDict

from ... import profiles, spec
from ...auth import TENANT_MAX
from ...drivers import DRIVERS
from ...model import InvalidInput, OperationKind
from ...operations_table import USER_ACTIONS
from ...service import HEX32_RE, NAME_RE, USER_RE, Caller, Service
from .. import views

router = APIRouter(prefix="/v1")


def _pattern(rx: re.Pattern) -> str:
    """A server regex as a JSON Schema pattern: `\\Z` (end, no newline) is ECMA's `$`."""
    return rx.pattern.replace("\\Z", "$")


TOKEN_TTL_MAX = 30 * 86400  # as imsso.auth.LocalTokens bounds it
PASSWORD_MIN, PASSWORD_MAX = 8, 64  # as imsso.service checks a SIP Digest password
PRINTABLE = f"^[^{spec.CONTROL_RE.pattern[1:-1]}]*$"  # no control character, as spec refuses them
ALL_ROLES = sorted({r for name in profiles.available() for r in profiles.load(name).roles})
SIZE_MAX = max(r.max for name in profiles.available() for r in profiles.load(name).roles.values())


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable kind: invalid, not_found, conflict, unauthorized, ...")
    message: str = Field(description="what is wrong and what is accepted")
    details: dict[str, Any] = Field(description="the bad part, bounds, the running operation ...")


class ErrorBody(BaseModel):
    error: ErrorDetail


_WHY = {
    400: "invalid input, or an action that does not apply now (the message says which)",
    401: "missing, invalid or expired X-Auth-Token",
    403: "token not valid for this tenant, or a quota reached",
    404: "no such resource for this tenant",
    405: "method not allowed on this path",
    409: "another operation runs on the instance, or the name is taken",
    413: "request body too large",
    502: "the driver failed (the message has its cause)",
    503: "Keystone or a unit is unreachable",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody, "description": _WHY[s]} for s in statuses}


AUTHED = errors(400, 401, 403, 404, 405, 409, 413, 503)  # every authenticated operation
DRIVEN = errors(502)  # operations that reach the units at once (subscribers)


def service(request: Request) -> Service:
    return request.app.state.service


_token = APIKeyHeader(
    name="X-Auth-Token", auto_error=False, description="a token: `imsso token issue --tenant NAME`, or Keystone's"
)


def caller(
    request: Request,
    x_auth_token: Annotated[str | None, Depends(_token)] = None,
    x_tenant_name: Annotated[
        str | None, Header(max_length=TENANT_MAX, description="the tenant the token acts for")
    ] = None,
) -> Caller:
    return service(request).authenticate(x_auth_token, x_tenant_name)


Svc = Annotated[Service, Depends(service)]
Who = Annotated[Caller, Depends(caller)]
Ref = Annotated[str, Path(pattern=_pattern(NAME_RE), description="the instance's name or id")]
User = Annotated[str, Path(pattern=_pattern(USER_RE), description="the subscriber's user part")]
OpId = Annotated[str, Path(pattern=_pattern(NAME_RE), description="the operation's id")]

InstanceName = Annotated[str, Field(pattern=_pattern(NAME_RE), description="1-63 lowercase letters, digits or '-'")]
ProfileName = Annotated[str, Field(pattern=_pattern(profiles.NAME_RE), description="a profile of GET /v1/profiles")]
# Bounds the service checks itself, against the instance's profile (its message names them): stated
# in the document, not enforced twice.
if TYPE_CHECKING:  # the role names are data: a type checker sees a plain mapping
    Sizes = dict[str, int]
else:
    Sizes = Annotated[
        dict[Literal[tuple(ALL_ROLES)], Annotated[int, Field(json_schema_extra={"minimum": 1, "maximum": SIZE_MAX})]],
        Field(
            max_length=len(ALL_ROLES),
            description='units per role, e.g. {"scscf": 2}, within the profile\'s bounds (GET /v1/profiles)',
        ),
    ]
Value = str | int | float | bool
Attributes = Annotated[
    dict[
        Annotated[str, Field(pattern=_pattern(spec.ATTRIBUTE_NAME_RE))],
        Annotated[str, Field(max_length=spec.MAX_VALUE, pattern=PRINTABLE)] | int | float | bool,
    ],
    Field(
        description=f"OCCI attributes: {spec.ACCEPTED}; their values are checked "
        "against the instance's profile and driver"
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


if TYPE_CHECKING:
    UserAction = str
else:
    UserAction = Literal[USER_ACTIONS]  # the operation table's user actions: deploy, provision
DRIVER_NAMES = tuple(DRIVERS)  # the driver registry's names
if TYPE_CHECKING:
    DriverName = str
else:
    DriverName = Literal[DRIVER_NAMES]
# What a create may run: the user actions in order, none, the first, ... all of them.
ACTION_CHAINS: list[JsonValue] = [list(USER_ACTIONS[:n]) for n in range(len(USER_ACTIONS) + 1)]


class InstanceCreate(Strict):
    name: InstanceName = Field("default", description="unique among the tenant's live instances")
    profile: ProfileName | None = Field(None, description="profile name; the server's default if absent")
    driver: DriverName | None = Field(
        None, description=f"where the IMS runs: one of {', '.join(DRIVER_NAMES)}; the server's default if absent"
    )
    sizes: Sizes = Field(default_factory=dict)
    attributes: Attributes = Field(default_factory=dict)
    actions: list[UserAction] = Field(
        list(USER_ACTIONS),
        json_schema_extra={"enum": ACTION_CHAINS},
        description="operations to run one after the other; [] only initialises",
    )


class InstancePatch(Strict):
    sizes: Sizes = Field(default_factory=dict)
    attributes: Attributes = Field(default_factory=dict)


Password = Annotated[
    str,
    Field(
        pattern=PRINTABLE,
        json_schema_extra={"minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX},
        description="SIP Digest password, 8-64 printable characters",
    ),
]
Hex32 = Annotated[str, Field(pattern=HEX32_RE.pattern)]


# A password, or both AKA keys: what imsso.service.put_subscriber asks for.
_SECRETS: JsonDict = {
    "anyOf": [
        {
            "required": ["password"],
            "properties": {"password": {"type": "string"}, "k": {"type": "null"}, "opc": {"type": "null"}},
        },
        {"required": ["k", "opc"], "properties": {"k": {"type": "string"}, "opc": {"type": "string"}}},
    ]
}


class SubscriberIn(Strict):
    """A subscriber's secrets, for PUT (the path names the user)."""

    model_config = ConfigDict(json_schema_extra=_SECRETS)

    domain: Annotated[str, Field(pattern=_pattern(spec.DOMAIN_RE))] | None = Field(
        None, description="the instance's domain (the only one accepted)"
    )
    password: Password | None = None
    k: Hex32 | None = Field(None, description="AKA: the USIM's K, 32 hex digits (profiles with an HSS)")
    opc: Hex32 | None = Field(None, description="AKA: the operator key OPc, 32 hex digits")
    amf: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{4}$")] | None = Field(
        None, description="AKA: the vectors' AMF, 4 hex digits (default 8000)"
    )


class SubscriberNew(SubscriberIn):
    """A new subscriber, for POST."""

    user: Annotated[str, Field(pattern=_pattern(USER_RE), description="the user part")]


class TokenRequest(Strict):
    tenant: Annotated[str, Field(min_length=1, max_length=TENANT_MAX)]
    ttl: Annotated[int, Field(ge=1, le=TOKEN_TTL_MAX)] | None = Field(
        None, description="seconds; the server's default if absent"
    )


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


@router.post("/tokens", status_code=201, tags=["auth"], responses=errors(400, 401, 405, 413))
def issue_token(
    body: TokenRequest, svc: Svc, x_auth_token: Annotated[str | None, Depends(_token)] = None
) -> dict[str, Any]:
    """Issue a token for a tenant; needs the orchestrator's admin token (local tokens only)."""
    token, expires = svc.issue_token(x_auth_token, body.tenant, body.ttl)
    return {"token": token, "tenant": body.tenant, "expires_at": expires.isoformat()}


@router.get("/profiles", tags=["profiles"], responses=AUTHED)
def list_profiles(svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "description": p.description,
            "domain": p.domain,
            "roles": {r.name: {"min": r.min, "default": r.default, "max": r.max} for r in p.roles.values()},
        }
        for p in svc.profiles()
    ]


@router.get("/instances", tags=["instances"], responses=AUTHED)
def list_instances(svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [_instance(svc, i) for i in svc.list(who)]


@router.post(
    "/instances",
    status_code=202,
    tags=["instances"],
    responses={201: {"description": "initialised only (actions [])"}, **AUTHED, **DRIVEN},
)
def create_instance(body: InstanceCreate, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    """Create an instance and run `actions` (deploy then provision by default)."""
    if body.actions not in ACTION_CHAINS:
        raise InvalidInput(f'actions must be [], ["deploy"] or ["deploy", "provision"], not {body.actions}')
    then = tuple(OperationKind(a) for a in body.actions)
    instance, op = svc.create(who, body.name, body.attributes, body.profile, body.driver, body.sizes, then)
    response.headers["Content-Location"] = f"/v1/instances/{instance.id}"
    if op is None:
        response.status_code = 201
        response.headers["Location"] = f"/v1/instances/{instance.id}"
        return {"instance": _instance(svc, instance), "operation": None}
    response.headers["Location"] = f"/v1/operations/{op.id}"
    return {"instance": _instance(svc, instance), "operation": views.operation_json(op)}


@router.get("/instances/{ref}", tags=["instances"], responses=AUTHED)
def get_instance(ref: Ref, svc: Svc, who: Who) -> dict[str, Any]:
    return _instance(svc, svc.get(who, ref))


@router.patch("/instances/{ref}", status_code=202, tags=["instances"], responses=AUTHED)
def patch_instance(ref: Ref, body: InstancePatch, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    return accepted(response, svc.update(who, ref, body.attributes, body.sizes))


@router.post("/instances/{ref}/plan", tags=["instances"], responses={**AUTHED, **DRIVEN})
def plan_instance(ref: Ref, svc: Svc, who: Who, body: InstancePatch | None = None) -> dict[str, Any]:
    """The template and environment a deploy or an update with these changes would send, Heat's
    preview of what it would add, replace, update and delete, and the diff from the live stack.
    Nothing is changed."""
    body = body or InstancePatch()
    return svc.plan(who, ref, body.attributes, body.sizes)


@router.delete("/instances/{ref}", status_code=202, tags=["instances"], responses=AUTHED)
def delete_instance(ref: Ref, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    return accepted(response, svc.dispose(who, ref))


@router.post("/instances/{ref}/actions/{action}", status_code=202, tags=["instances"], responses=AUTHED)
def run_action(ref: Ref, action: UserAction, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    return accepted(response, svc.act(who, ref, OperationKind(action)))


@router.get("/instances/{ref}/operations", tags=["operations"], responses=AUTHED)
def instance_operations(ref: Ref, svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [views.operation_json(o) for o in svc.operations(svc.get(who, ref))]


@router.get("/instances/{ref}/events", tags=["instances"], responses=AUTHED)
def instance_events(
    ref: Ref,
    svc: Svc,
    who: Who,
    since: Annotated[int, Query(ge=0, le=2**63 - 1, description="the last event id seen")] = 0,
    kind: Annotated[str | None, Query(max_length=64, description="only events of this kind")] = None,
) -> list[dict[str, Any]]:
    """Lifecycle steps, decisions and failures, in order; `since` is the last event id seen."""
    return [views.event_json(e) for e in svc.events(who, ref, since, kind)]


@router.get("/instances/{ref}/metrics", tags=["instances"], responses=AUTHED)
def instance_metrics(ref: Ref, svc: Svc, who: Who) -> dict[str, dict[str, float]]:
    """The latest figures of each unit as the runtime loop sees them (counters, gauges, rates)."""
    return svc.metrics(who, ref)


@router.get("/instances/{ref}/subscribers", tags=["subscribers"], responses=AUTHED)
def list_subscribers(ref: Ref, svc: Svc, who: Who) -> list[dict[str, Any]]:
    return [views.subscriber_json(s) for s in svc.subscribers(who, ref)]


@router.post(
    "/instances/{ref}/subscribers",
    status_code=201,
    tags=["subscribers"],
    responses={200: {"description": "replaced an existing subscriber"}, **AUTHED, **DRIVEN},
)
def add_subscriber(ref: Ref, body: SubscriberNew, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    sub, created = svc.put_subscriber(who, ref, body.user, body.password, body.domain, body.k, body.opc, body.amf)
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"/v1/instances/{ref}/subscribers/{sub.user}"
    return views.subscriber_json(sub)


@router.get("/instances/{ref}/subscribers/{user}", tags=["subscribers"], responses=AUTHED)
def get_subscriber(ref: Ref, user: User, svc: Svc, who: Who) -> dict[str, Any]:
    """One subscriber: its identities and which credentials it has, never the secrets themselves."""
    return views.subscriber_json(svc.subscriber(who, ref, user))


@router.put(
    "/instances/{ref}/subscribers/{user}",
    tags=["subscribers"],
    responses={201: {"description": "created"}, **AUTHED, **DRIVEN},
)
def put_subscriber(ref: Ref, user: User, body: SubscriberIn, response: Response, svc: Svc, who: Who) -> dict[str, Any]:
    sub, created = svc.put_subscriber(who, ref, user, body.password, body.domain, body.k, body.opc, body.amf)
    response.status_code = 201 if created else 200
    return views.subscriber_json(sub)


@router.delete(
    "/instances/{ref}/subscribers/{user}", status_code=204, tags=["subscribers"], responses={**AUTHED, **DRIVEN}
)
def delete_subscriber(ref: Ref, user: User, svc: Svc, who: Who) -> Response:
    svc.delete_subscriber(who, ref, user)
    return Response(status_code=204)


@router.get("/operations/{op_id}", tags=["operations"], responses=AUTHED)
def get_operation(op_id: OpId, svc: Svc, who: Who) -> dict[str, Any]:
    return views.operation_json(svc.operation(who, op_id))


def openapi(app) -> dict[str, Any]:
    """The app's document, as FastAPI builds it, without the 422 it adds to every operation: this
    server answers invalid requests 400 with the error body declared on each operation."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema
