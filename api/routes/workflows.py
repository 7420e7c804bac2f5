"""Workflow definitions and starting runs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import authorize
from api.http import MAX_JSON_DEPTH, BadRequest, json_body, json_object, nesting_depth
from api.registry import READ_RUNS, endpoint
from engine.definitions import workflows
from engine.governance.apikeys import Role
from engine.runs import lifecycle, views

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


def _media_type(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (*YAML_TYPES, "application/json"):
        raise BadRequest("Content-Type must be application/yaml or application/json",
                         "Content-Type")
    return media


@endpoint("POST", "/workflows", "Store a workflow definition (YAML or JSON)",
          roles=(Role.SUBMITTER,), request="WorkflowDefinition",
          request_media=("application/yaml", "application/json"),
          responses={201: "Workflow", 200: "Workflow", 409: "Problem", 422: "Problem"})
async def create_workflow(request: Request) -> Response:
    caller = await authorize(request, Role.SUBMITTER)
    media = _media_type(request)
    raw = await request.body()
    if media == "application/json" and nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    stored = await workflows.store(request.app.state.svc.db, tenant_id=caller.tenant_id,
                                   source=raw, media_type=media, created_by=caller.actor)
    location = f"/api/v1/workflows/{stored.row.workflow_id}"
    return JSONResponse(views.workflow(stored.row), status_code=201 if stored.created else 200,
                        headers={"Location": location})


@endpoint("GET", "/workflows", "The newest version of each workflow",
          roles=READ_RUNS, responses={200: "WorkflowList"})
async def list_workflows(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    rows = await workflows.list_latest(request.app.state.svc.db, caller.tenant_id)
    return JSONResponse({"items": [views.workflow(r) for r in rows], "next_cursor": None})


@endpoint("GET", "/workflows/{workflow_id}", "Every stored version of a workflow",
          roles=READ_RUNS, responses={200: "WorkflowVersions", 404: "Problem"})
async def get_workflow(request: Request) -> Response:
    caller = await authorize(request, *READ_RUNS)
    workflow_id = request.path_params["workflow_id"]
    rows = await workflows.versions(request.app.state.svc.db, caller.tenant_id, workflow_id)
    return JSONResponse({"workflow_id": workflow_id,
                         "versions": [views.workflow(r) for r in rows]})


@endpoint("POST", "/workflows/{workflow_id}/runs", "Start a run of the newest version",
          roles=(Role.SUBMITTER,), request="StartRun", headers=("Idempotency-Key",),
          responses={201: "RunStarted", 200: "RunStarted", 403: "Problem", 404: "Problem",
                     409: "Problem", 422: "Problem"})
async def start_run(request: Request) -> Response:
    caller = await authorize(request, Role.SUBMITTER)
    body = json_object(await json_body(request, required=False), {"input", "version",
                                                                   "priority"})
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise BadRequest("version must be a string", "version")
    key = request.headers.get("Idempotency-Key")
    svc = request.app.state.svc
    started = await lifecycle.start(svc, tenant_id=caller.tenant_id,
                               workflow_id=request.path_params["workflow_id"],
                               input=body.get("input", {}), created_by=caller.actor,
                               idempotency_key=key, version=version,
                               priority=body.get("priority"))
    doc = views.run_started(await lifecycle.detail(svc, caller.tenant_id, started.run.run_id),
                            replayed=started.replayed)
    headers = {"Location": f"/api/v1/workflow-runs/{started.run.run_id}"}
    if started.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(doc, status_code=200 if started.replayed else 201, headers=headers)
