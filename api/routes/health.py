"""Liveness, readiness (database reachable and schema at head), and Prometheus metrics."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from api.problems import problem
from api.registry import endpoint
from engine import migrate
from engine.errors import DatabaseUnavailable, SchemaMismatch
from engine.store import health

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
    lines: list[str] = []
    async with request.app.state.svc.db.connection() as conn:
        jobs = await health.jobs_by_state(conn)
        runs = await health.runs_by_status(conn)
        pending = await health.approvals_pending(conn)
        unclaimed = await health.unclaimed(conn, UNCLAIMED_AFTER)
    lines += ["# HELP warden_jobs Jobs by status and topic.", "# TYPE warden_jobs gauge"]
    lines += [f'warden_jobs{{status="{r["status"]}",topic="{_label(r["topic"])}"}} {r["n"]}'
              for r in jobs]
    lines += ["# HELP warden_runs Runs by status.", "# TYPE warden_runs gauge"]
    lines += [f'warden_runs{{status="{r["status"]}"}} {r["n"]}' for r in runs]
    lines += ["# HELP warden_approvals_pending Approvals awaiting a decision.",
              "# TYPE warden_approvals_pending gauge", f"warden_approvals_pending {pending['n']}",
              "# HELP warden_approvals_pending_oldest_seconds Age of the oldest pending one.",
              "# TYPE warden_approvals_pending_oldest_seconds gauge",
              f"warden_approvals_pending_oldest_seconds {float(pending['oldest_age_s']):.3f}"]
    lines += ["# HELP warden_jobs_unclaimed Claimable jobs nobody claimed within the "
              "dispatch timeout.", "# TYPE warden_jobs_unclaimed gauge"]
    lines += [f'warden_jobs_unclaimed{{topic="{_label(r["topic"])}"}} {r["unclaimed"]}'
              for r in unclaimed]
    lines += ["# HELP warden_oldest_claimable_seconds Age of the oldest claimable job.",
              "# TYPE warden_oldest_claimable_seconds gauge"]
    lines += [f'warden_oldest_claimable_seconds{{topic="{_label(r["topic"])}"}} '
              f'{float(r["oldest_age_s"]):.3f}' for r in unclaimed]
    return PlainTextResponse("\n".join(lines) + "\n",
                             media_type="text/plain; version=0.0.4; charset=utf-8")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
