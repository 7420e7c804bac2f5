"""Workers and queues: who polls which topic, and what waits for them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import BadRequest, query
from api.registry import endpoint
from engine.governance.apikeys import Role
from engine.runs import fleet, views

READ = (Role.OPERATOR,)


@endpoint("GET", "/workers", "Workers: live ones (all=true: also dead and stopped ones, kept "
          "a day)", roles=READ, query=("all",), responses={200: "WorkerList"})
async def list_workers(request: Request) -> Response:
    await authorize(request, *READ)
    params = query(request, {"all"})
    everyone = params.get("all") or "false"  # empty is absent, as everywhere
    if everyone not in ("true", "false"):
        raise BadRequest("all must be true or false", "all")
    rows = await fleet.workers(request.app.state.svc.db, include_gone=everyone == "true")
    return JSONResponse({"items": [views.worker(w) for w in rows], "next_cursor": None})


@endpoint("GET", "/queues", "Per topic: depth, oldest claimable age, claims in the last "
          "minute, live workers polling it", roles=READ, responses={200: "QueueList"})
async def list_queues(request: Request) -> Response:
    caller = await authorize(request, *READ)
    query(request, set())
    rows = await fleet.queues(request.app.state.svc.db, caller.tenant_id)
    return JSONResponse({"items": [views.queue(q) for q in rows], "next_cursor": None})
