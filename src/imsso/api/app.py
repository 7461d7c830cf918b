"""The web application: both faces on one server, errors rendered in the face's own format."""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from ..model import OrchestratorError
from ..telemetry import CONTENT_TYPE
from .limits import RequestLimits, TooLarge
from .occi import routes as occi_routes
from .rest import openapi as rest_openapi
from .rest import router as rest_router

log = logging.getLogger("imsso.api")
STATUS = {
    "invalid": 400,
    "not_applicable": 400,
    "not_found": 404,
    "conflict": 409,
    "unauthorized": 401,
    "forbidden": 403,
    "unavailable": 503,
    "driver": 502,
}


def create_app(app_state) -> FastAPI:
    """`app_state` is the assembled orchestrator (service, engine, tokens) from imsso.server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app_state.start()
        try:
            yield
        finally:
            app_state.stop()

    settings = getattr(app_state, "settings", None)
    # The contract (/v1/openapi.json) is public like the API's shape; the Swagger UI is a setting.
    app = FastAPI(
        title="imsso",
        version="0.1.0",
        lifespan=lifespan,
        description="IMS Service Orchestrator: OCCI at /orchestrator/ and /ims/, JSON under /v1",
        openapi_url="/v1/openapi.json",
        redoc_url=None,
        docs_url="/v1/docs" if getattr(settings, "docs", True) else None,
    )
    app.openapi = lambda: rest_openapi(app)  # type: ignore[method-assign]  # FastAPI's documented hook
    app.state.service = app_state.service
    app.include_router(rest_router)
    telemetry = getattr(app_state, "telemetry", None)
    if telemetry is not None and settings is not None and settings.metrics_enabled():

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            """The orchestrator's own figures for Prometheus (no token: bind to a trusted address)."""
            return Response(telemetry.render(), media_type=CONTENT_TYPE)

    app.include_router(occi_routes.router)

    @app.exception_handler(OrchestratorError)
    async def orchestrator_error(request: Request, exc: OrchestratorError) -> Response:
        return error_response(request, STATUS.get(exc.code, 400), exc.code, exc.message, exc.details)

    for error_type, status in occi_routes.OCCI_ERRORS.items():
        app.add_exception_handler(error_type, _plain_handler(status))

    # Every request's headers and body are bounded before any handler reads them.
    max_body = getattr(getattr(app_state, "settings", None), "max_body", 1024 * 1024)
    app.add_middleware(RequestLimits, limit=max_body, refuse=_body_refusal)
    app.add_exception_handler(TooLarge, lambda request, exc: _body_refusal(request, exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # The client gets a reference, not internals; the log has the traceback under it.
        reference = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s %s", reference, request.method, request.url.path)
        return error_response(
            request,
            500,
            "internal",
            f"internal error (reference {reference} in the service's log)",
            {"reference": reference},
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        message = "; ".join(f"{d['where']}: {d['problem']}" for d in details)
        return error_response(request, 400, "invalid", f"invalid request: {message}", {"errors": details})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        message = {
            404: f"no resource at {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        response = error_response(request, exc.status_code, code, message, {})
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request.url.path))
        return response

    return app


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route takes at `path`, asked of the router itself."""
    scope = {"type": "http", "path": path, "root_path": ""}
    return [
        m
        for m in ("GET", "PUT", "POST", "PATCH", "DELETE")
        if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in app.router.routes)
    ]


def _body_refusal(request: Request, exc: TooLarge) -> Response:
    response = error_response(request, exc.status_code, "too_large", exc.detail, {"limit": exc.limit})
    response.headers["Connection"] = "close"
    return response


def _plain_handler(status: int):
    async def handler(request: Request, exc: Exception) -> Response:
        return error_response(request, status, "invalid", str(exc), {})

    return handler


def error_response(request: Request, status: int, code: str, message: str, details: dict) -> Response:
    if request.url.path.startswith("/v1"):
        return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status)
    return occi_routes.occi_error(request, status, message)
