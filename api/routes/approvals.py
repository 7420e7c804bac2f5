"""The approvals queue: list, show what will run, approve, reject."""

from __future__ import annotations

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
from api.registry import endpoint
from engine.core.enums import ApprovalStatus
from engine.core.errors import NotFound
from engine.governance import approvals
from engine.governance.apikeys import Role
from engine.runs import approval_plan, job_reads, views

READ = (Role.APPROVER, Role.OPERATOR)


def _approval_id(request: Request) -> UUID:
    approval_id = path_uuid(request, "approval_id")
    if approval_id is None:
        raise NotFound(f"approval {request.path_params['approval_id'][:40]!r} not found")
    return approval_id


@endpoint("GET", "/approvals", "The approvals queue, oldest first", roles=READ,
          query=("status", "limit", "cursor"), responses={200: "ApprovalList"})
async def list_approvals(request: Request) -> Response:
    caller = await authorize(request, *READ)
    params = query(request, {"status", "limit", "cursor"})
    page_size = limit(params)
    svc = request.app.state.svc
    rows, context = await approvals.queue(
        svc.db, svc.definitions, tenant_id=caller.tenant_id,
        status=enum_param(params, "status", ApprovalStatus),
        after=uuid_cursor(params.get("cursor")), limit=page_size)
    return JSONResponse(views.approval_page(rows, page_size, context))


@endpoint("GET", "/approvals/{approval_id}", "An approval and exactly what it would let run",
          roles=READ, responses={200: "ApprovalDetail", 404: "Problem"})
async def get_approval(request: Request) -> Response:
    caller = await authorize(request, *READ)
    db = request.app.state.svc.db
    row = await approvals.show(db, caller.tenant_id, _approval_id(request))
    job = await job_reads.get(db, caller.tenant_id, row.job_id) if row.job_id is not None else None
    lets_run = await approval_plan.plan(request.app.state.svc, caller.tenant_id, row.approval_id)
    return JSONResponse(views.approval_detail(row, job, lets_run))


async def _decide(request: Request, approve: bool) -> Response:
    caller = await authorize(request, Role.APPROVER)
    body = json_object(await json_body(request, required=False), {"reason", "job_hash"})
    for name in ("reason", "job_hash"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(f"{name} must be a string", name)
    row = await approvals.decide(request.app.state.svc.db, tenant_id=caller.tenant_id,
                                 approval_id=_approval_id(request), approve=approve,
                                 principal=caller.actor, reason=body.get("reason"),
                                 job_hash=body.get("job_hash"))
    return JSONResponse(views.approval(row))


@endpoint("POST", "/approvals/{approval_id}/approve", "Approve (once; not your own run)",
          roles=(Role.APPROVER,), request="ApprovalDecision",
          responses={200: "Approval", 403: "Problem", 404: "Problem", 409: "Problem"})
async def approve(request: Request) -> Response:
    return await _decide(request, approve=True)


@endpoint("POST", "/approvals/{approval_id}/reject",
          "Reject, saying why in a non-empty reason (the run ends denied)",
          roles=(Role.APPROVER,), request="ApprovalRejection",
          responses={200: "Approval", 403: "Problem", 404: "Problem", 409: "Problem",
                     422: "Problem"})
async def reject(request: Request) -> Response:
    return await _decide(request, approve=False)
