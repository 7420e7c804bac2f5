"""Workflow definitions and starting runs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import problems
from api.auth import authorize
from api.http import MAX_JSON_DEPTH, BadRequest, json_body, json_object, nesting_depth
from api.registry import READ_RUNS, endpoint
from engine.core.canonical import unstorable
from engine.core.errors import InvalidInput, PolicyDenied
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


BATCH_ITEM_FIELDS = {"input", "idempotency_key", "version"}


@endpoint("POST", "/workflows/{workflow_id}/runs/batch",
          "Start up to 1,000 runs of the newest version, each item on its own",
          roles=(Role.SUBMITTER,), request="StartRuns",
          responses={207: "RunsStarted", 404: "Problem", 422: "Problem"})
async def start_runs(request: Request) -> Response:
    """207 with one result per item, in order: each item is started, replayed or refused
    on its own (its own Idempotency key, submit decisions and status). Only a malformed
    request as a whole (not an object, no items, more than 1,000) or a workflow the tenant
    does not have (404) is one problem."""
    caller = await authorize(request, Role.SUBMITTER)
    body = json_object(await json_body(request, storable=False), {"items"})
    raw = body.get("items")
    if not isinstance(raw, list):
        raise BadRequest("items must be an array of runs to start", "items")
    if not 1 <= len(raw) <= lifecycle.MAX_BATCH:
        raise InvalidInput("items", f"must hold 1 to {lifecycle.MAX_BATCH} runs, not {len(raw)}")
    items: list[lifecycle.StartItem] = []
    refused: dict[int, InvalidInput] = {}
    for i, item in enumerate(raw):
        try:
            items.append(_batch_item(i, item))
        except InvalidInput as exc:
            refused[i] = exc
            items.append(lifecycle.StartItem({}))  # a place holder, never started
    todo = [i for i in range(len(items)) if i not in refused]
    results: dict[int, lifecycle.ItemResult] = {}
    if todo:
        done = await lifecycle.start_many(
            request.app.state.svc, tenant_id=caller.tenant_id,
            workflow_id=request.path_params["workflow_id"], created_by=caller.actor,
            items=[items[i] for i in todo], item_fields=False)
        results = {todo[r.index]: r for r in done}
    out = [_item_result(i, results.get(i), refused.get(i)) for i in range(len(items))]
    return JSONResponse({"items": out}, status_code=207)


def _batch_item(i: int, item: Any) -> lifecycle.StartItem:
    where = f"items[{i}]"
    if not isinstance(item, dict):
        raise InvalidInput(where, "must be an object with input, idempotency_key, version")
    unknown = sorted(set(item) - BATCH_ITEM_FIELDS)
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown field (allowed: "
                           f"{', '.join(sorted(BATCH_ITEM_FIELDS))})")
    found = unstorable(item)
    if found is not None:
        path, problem = found
        raise InvalidInput(f"{where}.{path}" if path else where, problem)
    key, version = item.get("idempotency_key"), item.get("version")
    if key is not None and not isinstance(key, str):
        raise InvalidInput(f"{where}.idempotency_key", "must be a string")
    if version is not None and not isinstance(version, str):
        raise InvalidInput(f"{where}.version", "must be a string")
    return lifecycle.StartItem(item.get("input", {}), key, version)


def _item_result(i: int, result: lifecycle.ItemResult | None,
                 refused: InvalidInput | None) -> dict[str, Any]:
    error = refused or (result.error if result else None)
    started = result.started if result else None
    doc: dict[str, Any] = {"index": i}
    if started is not None:
        doc["status"] = 200 if started.replayed else 201
        doc["replayed"] = started.replayed
        doc["run"] = views.run(started.run)
    if error is not None:
        if isinstance(error, InvalidInput) and result is not None:
            # the engine names the item's field as a single start does
            error = InvalidInput(f"items[{i}].{_api_field(error.field)}",
                                 str(error).removeprefix(f"{error.field}: "))
        status, problem, _ = problems.document(error)
        doc["status"] = status
        doc["problem"] = problem
    if isinstance(error, PolicyDenied) and started is not None:
        doc["status"] = 403  # the run is stored denied, as a single start's 403 says
    return doc


def _api_field(field: str) -> str:
    return "idempotency_key" if field == "Idempotency-Key" else field
