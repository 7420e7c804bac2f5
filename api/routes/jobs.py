"""Jobs and their policy decisions (read-only: workers write through the SQL protocol)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import decode_cursor, encode_cursor, enum_param, limit, query
from api.registry import READ_JOBS, endpoint
from engine.core.enums import JobStatus
from engine.governance import decisions
from engine.runs import job_reads, views


@endpoint("GET", "/jobs", "Jobs, newest first (keyset-paginated)", roles=READ_JOBS,
          query=("status", "topic", "limit", "cursor"), responses={200: "JobList"})
async def list_jobs(request: Request) -> Response:
    caller = await authorize(request, *READ_JOBS)
    params = query(request, {"status", "topic", "limit", "cursor"})
    page_size = limit(params)
    rows = await job_reads.page(request.app.state.svc.db, caller.tenant_id,
                           status=enum_param(params, "status", JobStatus),
                           topic=params.get("topic") or None,
                           before=decode_cursor(params.get("cursor")), limit=page_size)
    next_cursor = (encode_cursor(rows[-1].created_at, rows[-1].job_id)
                   if len(rows) == page_size else None)
    return JSONResponse({"items": [views.job(j) for j in rows], "next_cursor": next_cursor})


@endpoint("GET", "/jobs/{job_id}", "One job (one attempt of a step)", roles=READ_JOBS,
          responses={200: "Job", 404: "Problem"})
async def get_job(request: Request) -> Response:
    caller = await authorize(request, *READ_JOBS)
    row = await job_reads.get(request.app.state.svc.db, caller.tenant_id,
                              request.path_params["job_id"])
    return JSONResponse(views.job(row))


@endpoint("GET", "/jobs/{job_id}/decisions", "Every policy decision about a job",
          roles=READ_JOBS, responses={200: "DecisionList", 404: "Problem"})
async def job_decisions(request: Request) -> Response:
    caller = await authorize(request, *READ_JOBS)
    db = request.app.state.svc.db
    job = await job_reads.get(db, caller.tenant_id, request.path_params["job_id"])  # 404 first
    rows = await decisions.decisions_of_job(db, caller.tenant_id, job.job_id)
    return JSONResponse({"items": [views.decision(d) for d in rows], "next_cursor": None})
