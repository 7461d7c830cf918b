"""The OCCI face: the original IMSSO's /orchestrator/ and the service manager's /ims/ collection.

Thin: parse with the pure OCCI core, call the service, render. Status codes follow DESIGN.md.
Handlers that take a body read it on the event loop (bounded by the app's body limit) and do the
rest, parsing and the blocking service calls, in a worker thread: a big or slow request from one
tenant must not hold up the others.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ... import lifecycle
from ...model import Instance, InvalidInput, OperationKind
from ...operations_table import USER_ACTIONS
from ...service import Caller, Service
from .. import views
from . import (
    COLLECTION_MEDIA_TYPES,
    ENTITY_MEDIA_TYPES,
    QUERY_MEDIA_TYPES,
    TEXT_PLAIN,
    Category,
    Entity,
    NotAcceptable,
    OcciSyntaxError,
    UnsupportedMediaType,
    negotiate,
    parse_request,
    render_collection,
    render_entity,
    render_error,
    render_query,
)

SERVICE_SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/service#"
SM_SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/sm#"
ORCHESTRATOR_PATH, IMS_PATH = "/orchestrator/", "/ims/"  # the kinds' locations
CORE_SCHEME = "http://schemas.ogf.org/occi/core#"
INPUTS = ("mcn.endpoint.maas", "imsso.profile", "imsso.driver", "imsso.domain", "imsso.test_subscribers")
OUTPUTS = (
    "occi.core.id{immutable}",
    "occi.mcn.stack.state{immutable}",
    "occi.mcn.stack.id{immutable}",
    "mcn.service.state{immutable}",
)

ACTIONS = {k: Category(k, SERVICE_SCHEME, "action", title=f"{k} the IMS") for k in USER_ACTIONS}
ORCHESTRATOR = Category(
    "orchestrator",
    SERVICE_SCHEME,
    "kind",
    title="IMS service orchestrator",
    rel=CORE_SCHEME + "resource",
    location=ORCHESTRATOR_PATH,
    attributes=OUTPUTS + INPUTS,
    actions=tuple(a.id for a in ACTIONS.values()),
)
IMS = Category(
    "ims",
    SM_SCHEME,
    "kind",
    title="IMS service instance",
    rel=CORE_SCHEME + "resource",
    location=IMS_PATH,
    attributes=OUTPUTS + INPUTS,
    actions=tuple(a.id for a in ACTIONS.values()),
)
CORE = (
    Category(
        "entity",
        CORE_SCHEME,
        "kind",
        title="Entity",
        location="/entity/",
        attributes=("occi.core.id{immutable}", "occi.core.title"),
    ),
    Category(
        "resource",
        CORE_SCHEME,
        "kind",
        title="Resource",
        rel=CORE_SCHEME + "entity",
        location="/resource/",
        attributes=("occi.core.summary",),
    ),
)

router = APIRouter(include_in_schema=False)


# query interface
@router.get("/-/")
@router.get("/.well-known/org/ogf/occi/-/")
def query(request: Request) -> Response:
    svc = _service(request)
    _caller(request)
    media = negotiate(request.headers.get("accept"), QUERY_MEDIA_TYPES)
    # Every role of every profile can be sized: name those attributes too.
    sizes = tuple(sorted({f"imsso.size.{role}" for p in svc.profiles() for role in p.roles}))
    kinds = [dataclasses.replace(k, attributes=k.attributes + sizes) for k in (ORCHESTRATOR, IMS)]
    return _respond(200, media, *render_query([*CORE, *kinds, *ACTIONS.values()], media))


# Two collections of the same resources: the original SO's /orchestrator/<name> ("default" being
# the tenant's default instance) and the service manager's /ims/<id>, whose POST also deploys.
def list_instances(request: Request) -> Response:
    svc, who, kind = _service(request), _caller(request), _kind(request)
    return _collection(request, [_location(kind, i) for i in svc.list(who)])


async def init(ref: str, request: Request) -> Response:
    return await _in_thread(_init, request, ref)


async def create_ims(request: Request) -> Response:
    return await _in_thread(_create_ims, request)


async def post(ref: str, request: Request) -> Response:
    return await _in_thread(_post, request, ref)


def _init(request: Request, body: str, ref: str) -> Response:
    svc, who = _service(request), _caller(request)
    occi = _parse(request, body)
    _expect_kind(occi, ORCHESTRATOR)
    instance, _ = svc.create(who, ref, dict(occi.attributes))
    return _entity_response(request, svc, instance, 201)


def _create_ims(request: Request, body: str) -> Response:
    svc, who = _service(request), _caller(request)
    occi = _parse(request, body)
    _expect_kind(occi, IMS)
    attributes = dict(occi.attributes)
    name = str(attributes.pop("occi.core.title", "") or "") or f"ims-{secrets.token_hex(4)}"
    instance, _ = svc.create(who, name, attributes, then=(OperationKind.DEPLOY, OperationKind.PROVISION))
    return _entity_response(request, svc, instance, 201)


def show(ref: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    return _entity_response(request, svc, svc.get(who, ref), 200)


def _post(request: Request, body: str, ref: str) -> Response:
    """POST ?action=X triggers an action; POST without one updates attributes."""
    svc, who = _service(request), _caller(request)
    occi = _parse(request, body)
    action = request.query_params.get("action")
    if action is None:
        _expect_kind(occi, _kind(request))
        svc.update(who, ref, dict(occi.attributes))
    else:
        if occi.attributes:  # an action carries no inputs here: say so rather than drop them
            raise InvalidInput(
                f"action {action} takes no attributes; POST them without ?action= to "
                f"update: {', '.join(occi.attributes)}"
            )
        svc.act(who, ref, _action(action, occi))
    return _entity_response(request, svc, svc.get(who, ref), 200)


def delete(ref: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    instance = svc.get(who, ref)
    svc.dispose(who, instance.id)
    # Read back by id: a quick dispose may already have made it unfindable by name.
    return _entity_response(request, svc, svc.refresh(instance), 200)


for base in (ORCHESTRATOR_PATH, IMS_PATH):
    router.add_api_route(base, list_instances, methods=["GET"])
    router.add_api_route(base + "{ref}", show, methods=["GET"])
    router.add_api_route(base + "{ref}", post, methods=["POST"])
    router.add_api_route(base + "{ref}", delete, methods=["DELETE"])
router.add_api_route(ORCHESTRATOR_PATH + "{ref}", init, methods=["PUT"])
router.add_api_route(IMS_PATH, create_ims, methods=["POST"])


def _kind(request: Request) -> Category:
    return IMS if request.url.path.startswith(IMS_PATH) else ORCHESTRATOR


def _location(kind: Category, instance: Instance) -> str:
    return f"{kind.location}{instance.id if kind is IMS else instance.name}"


def _action(term: str, occi) -> OperationKind:
    if term not in ACTIONS:
        raise InvalidInput(f"unknown action '{term}': accepted are {', '.join(ACTIONS)}")
    for category in occi.categories:
        if category.id != ACTIONS[term].id:
            raise InvalidInput(
                f"Category {category.scheme}{category.term} does not match action "
                f"'{term}': send Category: {term}; scheme=\"{SERVICE_SCHEME}\""
            )
    return OperationKind(term)


def _expect_kind(occi, kind: Category) -> None:
    """Only this kind may be named; an unknown category is an error naming what is accepted."""
    for category in occi.categories:
        if category.id != kind.id:
            raise InvalidInput(
                f"unknown category {category.scheme}{category.term} here: accepted is "
                f'{kind.term}; scheme="{kind.scheme}"'
            )


async def _in_thread(handler, request: Request, *args) -> Response:
    """Read the body here, then run `handler(request, body, *args)` off the event loop."""
    body = _text(await request.body())
    return await run_in_threadpool(handler, request, body, *args)


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise OcciSyntaxError(
            f"request body: byte {err.start + 1} (0x{body[err.start]:02x}) is not UTF-8 - send the body as UTF-8 text"
        ) from None


def _header_text(value: str) -> str:
    """HTTP headers arrive as latin-1; a client's UTF-8 is read back as such where it is valid."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _parse(request: Request, body: str):
    headers = [(name, _header_text(value)) for name, value in request.headers.items()]
    return parse_request(headers, request.headers.get("content-type"), body)


def _service(request: Request) -> Service:
    return request.app.state.service


def _caller(request: Request) -> Caller:
    return _service(request).authenticate(request.headers.get("x-auth-token"), request.headers.get("x-tenant-name"))


def entity(svc: Service, instance: Instance, location: str, kind: Category) -> Entity:
    attrs: dict[str, Any] = views.attributes(
        instance, svc.units(instance), svc.failed_operation(instance), svc.decisions(instance)
    )
    actions = tuple((f"{location}?action={a}", ACTIONS[a]) for a in lifecycle.applicable_actions(instance))
    return Entity(kind=kind, location=location, attributes=attrs, actions=actions)


def _entity_response(request: Request, svc: Service, instance: Instance, status: int) -> Response:
    media = negotiate(request.headers.get("accept"), ENTITY_MEDIA_TYPES)
    kind = _kind(request)
    where = _location(kind, instance)
    headers, body = render_entity(entity(svc, instance, where, kind), media)
    response = _respond(status, media, headers, body)
    if status == 201:
        response.headers["Location"] = str(request.base_url).rstrip("/") + where
    return response


def _collection(request: Request, locations: list[str]) -> Response:
    media = negotiate(request.headers.get("accept"), COLLECTION_MEDIA_TYPES)
    return _respond(200, media, *render_collection(locations, media, str(request.base_url)))


def _respond(status: int, media: str, headers: list[tuple[str, str]], body: str) -> Response:
    response = Response(content=body, status_code=status, media_type=media)
    for name, value in headers:
        response.headers.append(name, value)
    return response


def occi_error(request: Request, status: int, message: str) -> Response:
    try:
        media = negotiate(request.headers.get("accept"), ENTITY_MEDIA_TYPES)
    except NotAcceptable:
        media = TEXT_PLAIN
    return _respond(status, media, *render_error(message, media))


OCCI_ERRORS = {OcciSyntaxError: 400, UnsupportedMediaType: 415, NotAcceptable: 406}
