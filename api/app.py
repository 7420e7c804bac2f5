"""The Starlette application: `/api/v1`, problem+json errors, bounded bodies.

`create_app(svc=…)` serves an engine the caller already opened (tests, `warden serve`);
with no `svc`, the lifespan opens the database named by the settings and closes it at
shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import problems, registry
from api.auth import NotAllowed, Unauthenticated
from api.http import BadRequest
from api.limits import BodyLimit
from api.registry import ENDPOINTS
from api.routes import (  # noqa: F401 - register
    approvals,
    events,
    fleet,
    health,
    jobs,
    policy,
    runs,
    schedules,
    whoami,
    workflows,
)
from api.spec import document
from api.tenancy import NoTenantScope
from engine.core.errors import WardenError
from engine.core.settings import load
from engine.runs.services import Services

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
DEFAULT_MAX_BODY = 1024 * 1024
ROOT_ALIASES = frozenset({"/healthz", "/readyz", "/metrics"})


async def _warden_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Unauthenticated):
        return problems.problem(401, "unauthenticated", "Unauthenticated", str(exc),
                                headers={"WWW-Authenticate": "X-API-Key"})
    if isinstance(exc, NotAllowed):
        return problems.problem(403, "forbidden", "Forbidden", str(exc))
    if isinstance(exc, BadRequest):
        return problems.bad_request(str(exc), exc.field)
    assert isinstance(exc, WardenError)
    return problems.from_error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    slug = {404: "not-found", 405: "method-not-allowed", 413: "too-large"}.get(
        exc.status_code, "http-error")
    return problems.problem(exc.status_code, slug, slug.replace("-", " ").capitalize(),
                            str(exc.detail), headers=dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problems.problem(500, "internal", "Internal error",
                            "the server failed; the error is logged")


def create_app(*, svc: Services | None = None, secret_key: bytes | None = None,
               max_body_size: int = DEFAULT_MAX_BODY, extra_routes: list[Any] | None = None,
               anchor_dir: Path | None = None) -> Starlette:
    """``anchor_dir``: WARDEN_AUDIT_ANCHOR_DIR, whose anchored heads an evidence export
    carries (api/routes/runs.py)."""
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if svc is not None:  # the caller owns the engine; state was set at creation
            yield
            return
        from api.standalone import open_services  # the process owns its database

        async with open_services() as (own_svc, own_secret):
            app.state.svc = own_svc
            app.state.secret_key = own_secret
            app.state.anchor_dir = load().audit_anchor_dir
            yield

    openapi = document(ENDPOINTS, PREFIX)

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    routes = registry.routes(PREFIX, ENDPOINTS)
    # probes and scrapers look at the root; the same handlers answer there
    routes += registry.routes("", [ep for ep in ENDPOINTS if ep.path in ROOT_ALIASES])
    routes.append(Route(f"{PREFIX}/openapi.json", openapi_json, methods=["GET"]))
    routes.append(Route("/openapi.json", openapi_json, methods=["GET"]))
    routes += extra_routes or []
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(NoTenantScope),
                                Middleware(BodyLimit, max_body_size=max_body_size)],
                    exception_handlers={WardenError: _warden_error, HTTPException: _http_error,
                                        Exception: _unexpected})
    if svc is not None:  # usable at once, with or without a lifespan run (in-process clients)
        app.state.svc = svc
        app.state.secret_key = secret_key
        app.state.anchor_dir = anchor_dir
    return app
