"""Policy bundles, snapshots, activation, and side-effect-free evaluation."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import BadRequest, json_body, json_object, query
from api.registry import endpoint
from engine.governance import decisions
from engine.governance.apikeys import Role
from engine.governance.policy import Facts
from engine.runs import lifecycle
from engine.store.records import PolicySnapshotRow

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def snapshot_view(row: PolicySnapshotRow, active: str | None) -> dict[str, Any]:
    return {"snapshot_hash": row.snapshot_hash, "bundle": row.bundle,
            "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "active": row.snapshot_hash == active}


@endpoint("POST", "/policy/bundles", "Store a policy bundle as an immutable snapshot",
          roles=(Role.ADMIN,), request="PolicyBundle",
          request_media=("application/yaml", "application/json"),
          responses={201: "Snapshot", 200: "Snapshot", 422: "Problem"})
async def create_bundle(request: Request) -> Response:
    caller = await authorize(request, Role.ADMIN)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (*YAML_TYPES, "application/json"):
        raise BadRequest("Content-Type must be application/yaml or application/json",
                         "Content-Type")
    db = request.app.state.svc.db
    stored = await decisions.store_bundle(db, tenant_id=caller.tenant_id,
                                           source=await request.body(), media_type=media,
                                           created_by=caller.actor)
    active = await decisions.active_pointer(db, caller.tenant_id)
    return JSONResponse(snapshot_view(stored.row, active),
                        status_code=201 if stored.created else 200)


@endpoint("GET", "/policy/snapshots", "Stored snapshots and the active one",
          roles=(Role.ADMIN, Role.OPERATOR), responses={200: "SnapshotList"})
async def list_snapshots(request: Request) -> Response:
    caller = await authorize(request, Role.ADMIN, Role.OPERATOR)
    query(request, set())
    db = request.app.state.svc.db
    active = await decisions.active_pointer(db, caller.tenant_id)
    rows = await decisions.snapshots(db, caller.tenant_id)
    return JSONResponse({"active": active, "items": [snapshot_view(r, active) for r in rows],
                         "next_cursor": None})


@endpoint("POST", "/policy/snapshots/{snapshot_hash}/activate",
          "Make a snapshot the tenant's active policy", roles=(Role.ADMIN,),
          responses={200: "Activation", 404: "Problem"})
async def activate(request: Request) -> Response:
    caller = await authorize(request, Role.ADMIN)
    row = await decisions.activate(request.app.state.svc.db, tenant_id=caller.tenant_id,
                                    snapshot_hash=request.path_params["snapshot_hash"],
                                    activated_by=caller.actor)
    return JSONResponse({"snapshot_hash": row.snapshot_hash, "previous_hash": row.previous_hash,
                         "activated_by": row.activated_by,
                         "activated_at": row.activated_at.isoformat()})


_FACT_FIELDS = {"topic", "workflow_id", "step_id", "risk_tags", "capability", "labels", "input"}


@endpoint("POST", "/policy/evaluate", "What the active policy decides (records nothing)",
          roles=(Role.ADMIN, Role.OPERATOR, Role.SUBMITTER), request="Facts",
          responses={200: "Evaluation", 422: "Problem"})
async def evaluate(request: Request) -> Response:
    caller = await authorize(request, Role.ADMIN, Role.OPERATOR, Role.SUBMITTER)
    body = json_object(await json_body(request), _FACT_FIELDS)
    if not isinstance(body.get("topic"), str):
        raise BadRequest("topic is required (a string)", "topic")
    tags, labels = body.get("risk_tags", []), body.get("labels", {})
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise BadRequest("risk_tags must be a list of strings", "risk_tags")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadRequest("labels must map strings to strings", "labels")
    for name in ("workflow_id", "step_id", "capability"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise BadRequest(f"{name} must be a string", name)
    facts = Facts(tenant_id=caller.tenant_id, workflow_id=body.get("workflow_id") or "",
                  step_id=body.get("step_id") or "", topic=body["topic"],
                  risk_tags=tuple(tags), capability=body.get("capability"), labels=labels,
                  input=lifecycle.check_input(body.get("input", {})))
    svc = request.app.state.svc
    async with svc.db.connection() as conn:
        evaluated = await svc.policies.evaluate(conn, caller.tenant_id, facts)
    return JSONResponse(evaluated.to_doc())
