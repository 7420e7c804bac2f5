"""Liveness, readiness (database reachable and schema at head), and Prometheus metrics:
this process's own (`engine.process.metrics`) and the database's state at scrape time
(`engine.process.dbgauges`)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.problems import problem
from api.registry import endpoint
from engine.core.errors import DatabaseUnavailable, SchemaMismatch
from engine.process import dbgauges
from engine.process import metrics as own_metrics
from engine.store import health, migrate
from engine.store.scope import across_tenants

# the reconciler's default dispatch timeout (WARDEN_DISPATCH_TIMEOUT_MS)
UNCLAIMED_AFTER = timedelta(minutes=5)


@endpoint("GET", "/healthz", "The process is up", responses={200: "Health"})
async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


@endpoint("GET", "/readyz", "The database answers and its schema is at head",
          responses={200: "Health", 503: "Problem"})
async def readyz(request: Request) -> Response:
    svc = request.app.state.svc
    try:
        async with svc.db.connection() as conn:
            await health.ping(conn)
        await asyncio.to_thread(migrate.require_head, svc.db.url)
    except (DatabaseUnavailable, SchemaMismatch) as exc:
        return problem(503, "not-ready", "Not ready", str(exc), headers={"Retry-After": "5"})
    except Exception as exc:  # alembic or the driver failing on a dead server
        return problem(503, "not-ready", "Not ready", f"database check failed: {exc}",
                       headers={"Retry-After": "5"})
    return JSONResponse({"status": "ready"})


@endpoint("GET", "/metrics", "Prometheus metrics", responses={200: None})
async def metrics(request: Request) -> Response:
    across_tenants()  # aggregate gauges over every tenant; no row leaves this process
    families = await dbgauges.read(request.app.state.svc.db, unclaimed_after=UNCLAIMED_AFTER)
    body, content_type = own_metrics.exposition(families, request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
