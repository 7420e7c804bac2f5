"""Runs: list, detail, timeline, evidence, rerun, cancel."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import (
    BadRequest,
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
from engine.core.errors import InvalidInput, NotFound
from engine.governance.apikeys import Role
from engine.runs import anchors, evidence, lifecycle, reruns, stopping, timeline, views


def _run_id(request: Request) -> UUID:
    run_id = path_uuid(request, "run_id")
    if run_id is None:  # not a UUID: it cannot name a run, for any tenant
        raise NotFound(f"run {request.path_params['run_id'][:40]!r} not found")
    return run_id


RUN_FILTERS = ("status", "denied_by", "workflow_id", "id_prefix", "created_after",
               "created_before", "idempotency_key", "rerun_of")


def _time_param(params: dict[str, str], name: str) -> datetime | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time, got {raw[:40]!r}", name) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _uuid_param(params: dict[str, str], name: str) -> UUID | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a run id", name) from None


def run_filter(request: Request) -> lifecycle.RunFilter:
    """The filters of a runs list: the named ones, and ``input.<field>=<value>`` pairs
    (matched by jsonb containment)."""
    given = [(k, v) for k, v in request.query_params.multi_items() if k.startswith("input.")]
    params = query(request, {*RUN_FILTERS, "limit", "cursor", *(k for k, _ in given)})
    pairs = [(k, v) for k, v in given if v]  # an empty one is absent, as everywhere
    denied_by = params.get("denied_by") or None
    if denied_by is not None and denied_by not in lifecycle.DENIED_BY:
        raise BadRequest(f"denied_by must be one of {', '.join(lifecycle.DENIED_BY)}", "denied_by")
    try:
        found = lifecycle.RunFilter(
            status=enum_param(params, "status", RunStatus), denied_by=denied_by,
            workflow_id=params.get("workflow_id") or None,
            id_prefix=params.get("id_prefix") or None,
            created_after=_time_param(params, "created_after"),
            created_before=_time_param(params, "created_before"),
            idempotency_key=params.get("idempotency_key") or None,
            rerun_of=_uuid_param(params, "rerun_of"),
            input_match=lifecycle.input_filter(pairs))
        found.params()  # a malformed id prefix is refused before any query
    except InvalidInput as exc:
        raise BadRequest(str(exc).split(": ", 1)[-1], exc.field) from None
    return found


@endpoint("GET", "/workflow-runs", "Runs, newest first (keyset-paginated), filtered: status, "
          "denied_by (policy|approval), workflow_id, id_prefix, created_after, created_before, "
          "idempotency_key, rerun_of, input.<field>=<value>", roles=READ_RUNS,
          query=(*RUN_FILTERS, "input.<field>", "limit", "cursor"), responses={200: "RunList"})
async def list_runs(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    filters = run_filter(request)
    params = dict(request.query_params)
    page_size = limit(params)
    rows = await lifecycle.page(request.app.state.svc.db, caller.tenant_id, filters=filters,
                           before=uuid_cursor(params.get("cursor")), limit=page_size)
    return JSONResponse(views.run_page(rows, page_size))


@endpoint("GET", "/workflow-runs/{run_id}", "A run with its steps, jobs and approvals",
          roles=READ_RUNS, responses={200: "RunDetail", 404: "Problem"})
async def get_run(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    detail = await lifecycle.detail(request.app.state.svc, caller.tenant_id, _run_id(request))
    return JSONResponse(views.run_detail(detail))


@endpoint("GET", "/workflow-runs/{run_id}/timeline", "A page of the run's timeline, oldest "
          "first; pass next_cursor back as cursor (after=SEQ is a deprecated alias)",
          roles=READ_RUNS, query=("limit", "cursor", "after"),
          responses={200: "Timeline", 404: "Problem"})
async def get_timeline(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    params = query(request, {"limit", "cursor", "after"})
    name = "cursor" if "cursor" in params else "after"
    try:
        after = int(params.get(name) or "0")
    except ValueError:
        raise BadRequest(f"{name} is not one this API issued", name) from None
    page_size = limit(params, default=200)
    events = await timeline.page(request.app.state.svc.db, caller.tenant_id, _run_id(request),
                                 after=max(after, 0), limit=page_size)
    return JSONResponse(views.event_page(events, page_size))


@endpoint("GET", "/workflow-runs/{run_id}/evidence",
          "The run's evidence, sealed: the lines `warden audit verify-export` checks offline",
          roles=(Role.AUDITOR,), responses={200: "Evidence", 404: "Problem"})
async def get_evidence(request: Request) -> Response:
    caller = await authorize(request, Role.AUDITOR)
    key = anchors.anchor_key(request.app.state.secret_key)
    # the anchored heads of the run (WARDEN_AUDIT_ANCHOR_DIR), as `warden audit export`
    # carries them: an anchor file that does not verify lends the export nothing
    anchor_dir = getattr(request.app.state, "anchor_dir", None)
    log = await asyncio.to_thread(anchors.read, anchor_dir, key) if anchor_dir else None
    if log is not None and log.problems:
        log = None
    lines = await evidence.export(
        request.app.state.svc.db,
        evidence.Scope(run_id=_run_id(request), tenant_id=caller.tenant_id), key, log)
    return JSONResponse({"run_id": request.path_params["run_id"],
                         "lines": [json.loads(line) for line in lines]})


@endpoint("POST", "/workflow-runs/{run_id}/rerun",
          "Rerun from a step (dry_run returns the plan and writes nothing)",
          roles=(Role.OPERATOR,), request="Rerun",
          responses={200: "RerunPlan", 201: "RunStarted", 404: "Problem", 409: "Problem",
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
                                 from_step=from_step, by=caller.actor)
        return JSONResponse(views.rerun_plan(plan))
    plan, started = await reruns.rerun(svc, tenant_id=caller.tenant_id, run_id=_run_id(request),
                                       from_step=from_step, created_by=caller.actor)
    detail = await lifecycle.detail(svc, caller.tenant_id, started.run.run_id)
    return JSONResponse(views.run_started(detail, replayed=False, plan=plan),
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
