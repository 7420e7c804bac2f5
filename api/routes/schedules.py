"""Cron schedules (docs/workflows.md#schedules): list with their next ticks, pause, resume."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import BadRequest, json_body, json_object, query
from api.registry import READ_RUNS, endpoint
from engine.governance.apikeys import Role
from engine.runs import schedules


@endpoint("GET", "/schedules", "The tenant's cron schedules with their next ticks "
          "(all=true: also those the newest workflow version dropped)", roles=READ_RUNS,
          query=("all",), responses={200: "ScheduleList"})
async def list_schedules(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    params = query(request, {"all"})
    everyone = params.get("all") or "false"
    if everyone not in ("true", "false"):
        raise BadRequest("all must be true or false", "all")
    rows, now = await schedules.listing(request.app.state.svc.db, caller.tenant_id,
                                        include_inactive=everyone == "true")
    return JSONResponse({"items": [schedules.schedule_doc(r, now) for r in rows],
                         "next_cursor": None})


async def _set_paused(request: Request, paused: bool) -> Response:
    caller = await authorize(request, Role.OPERATOR)
    json_object(await json_body(request, required=False), set())
    svc = request.app.state.svc
    row = await schedules.set_paused(
        svc.db, tenant_id=caller.tenant_id, workflow_id=request.path_params["workflow_id"],
        name=request.path_params["name"], paused=paused, by=caller.actor)
    rows, now = await schedules.listing(svc.db, caller.tenant_id, include_inactive=True)
    found = next(r for r in rows if (r.workflow_id, r.name) == (row.workflow_id, row.name))
    return JSONResponse(schedules.schedule_doc(found, now))


@endpoint("POST", "/schedules/{workflow_id}/{name}/pause", "Pause a schedule: no tick "
          "starts a run until it is resumed", roles=(Role.OPERATOR,),
          responses={200: "Schedule", 404: "Problem"})
async def pause_schedule(request: Request) -> Response:
    return await _set_paused(request, True)


@endpoint("POST", "/schedules/{workflow_id}/{name}/resume", "Resume a schedule from its "
          "next tick (the ticks it was paused through are not caught up)",
          roles=(Role.OPERATOR,), responses={200: "Schedule", 404: "Problem"})
async def resume_schedule(request: Request) -> Response:
    return await _set_paused(request, False)
