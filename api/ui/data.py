"""Read-only JSON for the operator page, where `/api/v1` has no one-call answer.

- ``GET /ui/api/runs/{run_id}/decisions``: every policy decision of a run (submit and
  dispatch stages); `/api/v1` has them per job only, and submit decisions have no job.
- ``GET /ui/api/approvals/{approval_id}/plan``: what an approval covers and what runs
  once it is given (`engine.approval_plan`, also in `GET /api/v1/approvals/{id}`).

Both authorize like `/api/v1` (same headers, same roles, another tenant's object is a
404) and call engine functions only.
"""

from __future__ import annotations

from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import path_uuid
from api.registry import READ_RUNS
from engine.core.errors import NotFound
from engine.governance import decisions
from engine.governance.apikeys import Role
from engine.runs import approval_plan as approval_plan_doc
from engine.runs import timeline, views

READ_APPROVALS = (Role.APPROVER, Role.OPERATOR)


def _uuid(request: Request, name: str, what: str) -> UUID:
    value = path_uuid(request, name)
    if value is None:
        raise NotFound(f"{what} {request.path_params[name][:40]!r} not found")
    return value


async def run_decisions(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    run_id = _uuid(request, "run_id", "run")
    db = request.app.state.svc.db
    await timeline.page(db, caller.tenant_id, run_id, after=0, limit=1)  # 404 if not ours
    rows = await decisions.decisions_of_run(db, caller.tenant_id, run_id)
    return JSONResponse({"items": [views.decision(d) for d in rows]})


async def approval_plan(request: Request) -> Response:
    caller = await authorize(request, *READ_APPROVALS)
    return JSONResponse(await approval_plan_doc.plan(
        request.app.state.svc, caller.tenant_id, _uuid(request, "approval_id", "approval")))
