"""Runs: list, detail, timeline, evidence, rerun, cancel."""

from __future__ import annotations

import json
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import (
    BadRequest,
    encode_cursor,
    enum_param,
    json_body,
    json_object,
    limit,
    path_uuid,
    query,
    uuid_cursor,
)
from api.registry import READ_RUNS, endpoint
from engine.core.enums import RunStatus
from engine.core.errors import NotFound
from engine.governance.apikeys import Role
from engine.runs import anchors, evidence, lifecycle, reruns, stopping, timeline, views


def _run_id(request: Request) -> UUID:
    run_id = path_uuid(request, "run_id")
    if run_id is None:  # not a UUID: it cannot name a run, for any tenant
        raise NotFound(f"run {request.path_params['run_id'][:40]!r} not found")
    return run_id


@endpoint("GET", "/workflow-runs", "Runs, newest first (keyset-paginated)", roles=READ_RUNS,
          query=("status", "workflow_id", "limit", "cursor"), responses={200: "RunList"})
async def list_runs(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    params = query(request, {"status", "workflow_id", "limit", "cursor"})
    page_size = limit(params)
    rows = await lifecycle.page(request.app.state.svc.db, caller.tenant_id,
                           status=enum_param(params, "status", RunStatus),
                           workflow_id=params.get("workflow_id") or None,
                           before=uuid_cursor(params.get("cursor")), limit=page_size)
    next_cursor = (encode_cursor(rows[-1].created_at, str(rows[-1].run_id))
                   if len(rows) == page_size else None)
    return JSONResponse({"items": [views.run(r) for r in rows], "next_cursor": next_cursor})


@endpoint("GET", "/workflow-runs/{run_id}", "A run with its steps, jobs and approvals",
          roles=READ_RUNS, responses={200: "RunDetail", 404: "Problem"})
async def get_run(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    detail = await lifecycle.detail(request.app.state.svc, caller.tenant_id, _run_id(request))
    return JSONResponse(views.run_detail(detail))


@endpoint("GET", "/workflow-runs/{run_id}/timeline", "A page of the run's timeline after a seq",
          roles=READ_RUNS, query=("limit", "after"), responses={200: "Timeline", 404: "Problem"})
async def get_timeline(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    params = query(request, {"limit", "after"})
    try:
        after = int(params.get("after", "0"))
    except ValueError:
        raise BadRequest("after must be a seq number", "after") from None
    page_size = limit(params, default=200)
    events = await timeline.page(request.app.state.svc.db, caller.tenant_id, _run_id(request),
                                 after=max(after, 0), limit=page_size)
    return JSONResponse({"items": [views.event(e) for e in events],
                         "next_after": events[-1].seq if len(events) == page_size else None})


@endpoint("GET", "/workflow-runs/{run_id}/evidence",
          "The run's evidence, sealed: the lines `warden audit verify-export` checks offline",
          roles=(Role.AUDITOR,), responses={200: "Evidence", 404: "Problem"})
async def get_evidence(request: Request) -> Response:
    caller = await authorize(request, Role.AUDITOR)
    lines = await evidence.export(
        request.app.state.svc.db,
        evidence.Scope(run_id=_run_id(request), tenant_id=caller.tenant_id),
        anchors.anchor_key(request.app.state.secret_key))
    return JSONResponse({"run_id": request.path_params["run_id"],
                         "lines": [json.loads(line) for line in lines]})


@endpoint("POST", "/workflow-runs/{run_id}/rerun",
          "Rerun from a step (dry_run returns the plan and writes nothing)",
          roles=(Role.OPERATOR,), request="Rerun",
          responses={200: "RerunPlan", 201: "RerunCreated", 404: "Problem", 409: "Problem",
                     422: "Problem"})
async def rerun(request: Request) -> Response:
    caller = await authorize(request, Role.OPERATOR)
    body = json_object(await json_body(request), {"from_step", "dry_run"})
    from_step, dry_run = body.get("from_step"), body.get("dry_run", False)
    if not isinstance(from_step, str) or not from_step:
        raise BadRequest("from_step must be a step id", "from_step")
    if not isinstance(dry_run, bool):
        raise BadRequest("dry_run must be true or false", "dry_run")
    svc = request.app.state.svc
    if dry_run:
        plan = await reruns.plan(svc, tenant_id=caller.tenant_id, run_id=_run_id(request),
                                 from_step=from_step)
        return JSONResponse({"dry_run": True, **plan.to_doc()})
    plan, started = await reruns.rerun(svc, tenant_id=caller.tenant_id, run_id=_run_id(request),
                                       from_step=from_step, created_by=caller.actor)
    return JSONResponse({"dry_run": False, "run": views.run(started.run), "plan": plan.to_doc()},
                        status_code=201,
                        headers={"Location": f"/api/v1/workflow-runs/{started.run.run_id}"})


@endpoint("POST", "/workflow-runs/{run_id}/cancel", "Cancel a run", roles=(Role.OPERATOR,),
          request="Cancel", responses={202: "Run", 404: "Problem", 409: "Problem"})
async def cancel_run(request: Request) -> Response:
    caller = await authorize(request, Role.OPERATOR)
    body = json_object(await json_body(request, required=False), {"reason"})
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason must be a string", "reason")
    row = await stopping.cancel(request.app.state.svc.db, tenant_id=caller.tenant_id,
                              run_id=_run_id(request), by=caller.actor, reason=reason)
    return JSONResponse(views.run(row), status_code=202)
