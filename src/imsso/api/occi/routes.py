"""The OCCI face: the original IMSSO's /orchestrator/ and the service manager's /ims/ collection.

Thin: parse with the pure OCCI core, call the service, render. Status codes follow DESIGN.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ... import lifecycle
from ...model import Instance, InvalidInput, OperationKind
from ...service import DEFAULT, Caller, Service
from .. import views
from . import (COLLECTION_MEDIA_TYPES, ENTITY_MEDIA_TYPES, QUERY_MEDIA_TYPES, TEXT_PLAIN, Category,
               Entity, NotAcceptable, OcciSyntaxError, UnsupportedMediaType, negotiate, parse_request,
               render_collection, render_entity, render_error, render_query)

SERVICE_SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/service#"
SM_SCHEME = "http://schemas.mobile-cloud-networking.eu/occi/sm#"
CORE_SCHEME = "http://schemas.ogf.org/occi/core#"
INPUTS = ("mcn.endpoint.maas", "imsso.profile", "imsso.driver", "imsso.domain", "imsso.test_subscribers",
          "imsso.size.pcscf", "imsso.size.scscf")
OUTPUTS = ("occi.core.id{immutable}", "occi.mcn.stack.state{immutable}", "occi.mcn.stack.id{immutable}",
           "mcn.service.state{immutable}")

ACTIONS = {k: Category(k, SERVICE_SCHEME, "action", title=f"{k} the IMS")
           for k in ("deploy", "provision")}
ORCHESTRATOR = Category("orchestrator", SERVICE_SCHEME, "kind", title="IMS service orchestrator",
                        rel=CORE_SCHEME + "resource", location="/orchestrator/",
                        attributes=OUTPUTS + INPUTS, actions=tuple(a.id for a in ACTIONS.values()))
IMS = Category("ims", SM_SCHEME, "kind", title="IMS service instance", rel=CORE_SCHEME + "resource",
               location="/ims/", attributes=OUTPUTS + INPUTS,
               actions=tuple(a.id for a in ACTIONS.values()))
CORE = (Category("entity", CORE_SCHEME, "kind", title="Entity", location="/entity/",
                 attributes=("occi.core.id{immutable}", "occi.core.title")),
        Category("resource", CORE_SCHEME, "kind", title="Resource", rel=CORE_SCHEME + "entity",
                 location="/resource/", attributes=("occi.core.summary",)))

router = APIRouter(include_in_schema=False)


# query interface
@router.get("/-/")
@router.get("/.well-known/org/ogf/occi/-/")
def query(request: Request) -> Response:
    _caller(request)
    media = negotiate(request.headers.get("accept"), QUERY_MEDIA_TYPES)
    return _respond(200, media, *render_query([*CORE, ORCHESTRATOR, IMS, *ACTIONS.values()], media))


# the original SO: one named instance per path, "default" being the tenant's default
@router.get("/orchestrator/")
def list_orchestrators(request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    return _collection(request, [f"/orchestrator/{i.name}" for i in svc.list(who)])


@router.put("/orchestrator/{name}")
async def init(name: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    occi = await _parse(request)
    _expect_kind(occi, ORCHESTRATOR)
    instance, _ = svc.create(who, name, dict(occi.attributes))
    return _entity_response(request, svc, instance, 201, f"/orchestrator/{instance.name}")


@router.get("/orchestrator/{name}")
def show(name: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    return _entity_response(request, svc, svc.get(who, name), 200)


@router.post("/orchestrator/{name}")
async def post(name: str, request: Request) -> Response:
    return await _post(request, name, ORCHESTRATOR)


@router.delete("/orchestrator/{name}")
def delete(name: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    instance = svc.get(who, name)
    svc.dispose(who, instance.id)
    # By id: a quick dispose may already have made the instance unfindable by name.
    return _entity_response(request, svc, svc.refresh(instance), 200)


# the service manager's collection: POST creates and deploys and provisions
@router.get("/ims/")
def list_ims(request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    return _collection(request, [f"/ims/{i.id}" for i in svc.list(who)])


@router.post("/ims/")
async def create_ims(request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    occi = await _parse(request)
    _expect_kind(occi, IMS)
    attributes = dict(occi.attributes)
    name = str(attributes.pop("occi.core.title", "") or "") or f"ims-{_short_id()}"
    instance, _ = svc.create(who, name, attributes,
                             then=(OperationKind.DEPLOY, OperationKind.PROVISION))
    return _entity_response(request, svc, instance, 201, f"/ims/{instance.id}")


@router.get("/ims/{ref}")
def show_ims(ref: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    return _entity_response(request, svc, svc.get(who, ref), 200)


@router.post("/ims/{ref}")
async def post_ims(ref: str, request: Request) -> Response:
    return await _post(request, ref, IMS)


@router.delete("/ims/{ref}")
def delete_ims(ref: str, request: Request) -> Response:
    svc, who = _service(request), _caller(request)
    instance = svc.get(who, ref)
    svc.dispose(who, instance.id)
    # By id: a quick dispose may already have made the instance unfindable by name.
    return _entity_response(request, svc, svc.refresh(instance), 200)


async def _post(request: Request, ref: str, kind: Category) -> Response:
    """POST ?action=X triggers an action; POST without one updates attributes."""
    svc, who = _service(request), _caller(request)
    occi = await _parse(request)
    action = request.query_params.get("action")
    if action is None:
        _expect_kind(occi, kind)
        svc.update(who, ref, dict(occi.attributes))
    else:
        svc.act(who, ref, _action(action, occi))
    return _entity_response(request, svc, svc.get(who, ref), 200)


def _action(term: str, occi) -> OperationKind:
    if term not in ACTIONS:
        raise InvalidInput(f"unknown action '{term}': accepted are {', '.join(ACTIONS)}")
    for category in occi.categories:
        if category.id != ACTIONS[term].id:
            raise InvalidInput(f"Category {category.scheme}{category.term} does not match action "
                               f"'{term}': send Category: {term}; scheme=\"{SERVICE_SCHEME}\"")
    return OperationKind(term)


def _expect_kind(occi, kind: Category) -> None:
    """Only this kind may be named; an unknown category is an error naming what is accepted."""
    for category in occi.categories:
        if category.id != kind.id:
            raise InvalidInput(f"unknown category {category.scheme}{category.term} here: accepted is "
                               f"{kind.term}; scheme=\"{kind.scheme}\"")


async def _parse(request: Request):
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_request(list(request.headers.items()), request.headers.get("content-type"), body)


def _service(request: Request) -> Service:
    return request.app.state.service


def _caller(request: Request) -> Caller:
    return _service(request).authenticate(request.headers.get("x-auth-token"),
                                          request.headers.get("x-tenant-name"))


def _short_id() -> str:
    import secrets

    return secrets.token_hex(4)


def entity(svc: Service, instance: Instance, location: str, kind: Category) -> Entity:
    attrs: dict[str, Any] = views.attributes(instance, svc.units(instance), svc.failed_operation(instance))
    actions = tuple((f"{location}?action={a}", ACTIONS[a]) for a in lifecycle.applicable_actions(instance))
    return Entity(kind=kind, location=location, attributes=attrs, actions=actions)


def _entity_response(request: Request, svc: Service, instance: Instance, status: int,
                     location: str | None = None) -> Response:
    media = negotiate(request.headers.get("accept"), ENTITY_MEDIA_TYPES)
    kind = IMS if request.url.path.startswith("/ims/") else ORCHESTRATOR
    where = location or (f"/ims/{instance.id}" if kind is IMS else f"/orchestrator/{instance.name}")
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
