"""The OpenAPI 3.1 document, generated from the route registry and these schemas."""

from __future__ import annotations

import re
from typing import Any

from api.registry import Endpoint

S = dict[str, Any]


def _obj(required: list[str], props: S, *, extra: bool = True) -> S:
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": extra}


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: str, *, cursor: bool = True) -> S:
    props: S = {"items": {"type": "array", "items": _ref(item)}}
    if cursor:
        props["next_cursor"] = {"type": ["string", "null"]}
    return _obj(["items"], props)


STR, NSTR = {"type": "string"}, {"type": ["string", "null"]}
INT: S = {"type": "integer"}
ANY: S = {}
TIME = {"type": ["string", "null"], "format": "date-time"}
RUN_STATUS = {"enum": ["pending", "running", "waiting", "succeeded", "failed", "denied",
                       "cancelled", "timed_out"]}

SCHEMAS: S = {
    "Problem": _obj(["type", "title", "status", "detail"], {
        "type": STR, "title": STR, "status": INT, "detail": STR,
        "errors": {"type": "array", "items": _obj(["message"], {"field": NSTR,
                                                               "message": STR})}}),
    "Health": _obj(["status"], {"status": STR}),
    "WorkflowDefinition": {"type": "object", "description": "docs/workflows.md, as YAML or JSON"},
    "Workflow": _obj(["workflow_id", "version", "name", "digest", "definition"], {
        "workflow_id": STR, "version": STR, "name": STR, "digest": STR,
        "definition": {"type": "object"}, "created_by": STR, "created_at": TIME}),
    "WorkflowList": _list("Workflow", cursor=False),
    "WorkflowVersions": _obj(["workflow_id", "versions"], {
        "workflow_id": STR, "versions": {"type": "array", "items": _ref("Workflow")}}),
    "StartRun": _obj([], {"input": {"type": "object"}, "version": STR}, extra=False),
    "Run": _obj(["run_id", "workflow_id", "workflow_version", "status", "input"], {
        "run_id": STR, "tenant_id": STR, "workflow_id": STR, "workflow_version": STR,
        "status": RUN_STATUS, "input": ANY, "output": ANY, "error": ANY,
        "idempotency_key": NSTR, "rerun_of": NSTR, "created_by": STR, "created_at": TIME,
        "started_at": TIME, "finished_at": TIME}),
    "Step": _obj(["step_id", "type", "status", "attempts", "job_ids"], {
        "step_id": STR, "type": STR, "status": STR, "attempts": INT, "output": ANY,
        "error": ANY, "depends_on": {"type": "array", "items": STR},
        "job_ids": {"type": "array", "items": STR}}),
    "RunDetail": {"allOf": [_ref("Run"), _obj(["steps", "jobs", "approvals"], {
        "steps": {"type": "array", "items": _ref("Step")},
        "jobs": {"type": "array", "items": _ref("Job")},
        "approvals": {"type": "array", "items": _ref("Approval")}})]},
    "RunList": _list("Run"),
    "TimelineEvent": _obj(["seq", "at", "kind", "data", "prev_hash", "hash"], {
        "seq": INT, "at": TIME, "kind": STR, "step_id": NSTR, "job_id": NSTR,
        "attempt": {"type": ["integer", "null"]}, "actor": NSTR, "data": ANY,
        "prev_hash": STR, "hash": STR, "key_id": INT}),
    "Evidence": _obj(["run_id", "lines"], {
        "run_id": STR, "lines": {"type": "array", "items": {"type": "object"}}}),
    "Timeline": _obj(["items", "next_after"], {
        "items": {"type": "array", "items": _ref("TimelineEvent")},
        "next_after": {"type": ["integer", "null"]}}),
    "Rerun": _obj(["from_step"], {"from_step": STR, "dry_run": {"type": "boolean"}},
                  extra=False),
    "RerunPlan": _obj(["rerun_of", "from_step", "reused", "to_run", "decisions",
                       "approvals_needed"], {
        "dry_run": {"type": "boolean"}, "rerun_of": STR, "from_step": STR,
        "reused": {"type": "array"}, "to_run": {"type": "array", "items": STR},
        "decisions": {"type": "object"}, "approvals_needed": {"type": "array", "items": STR}}),
    "RerunCreated": _obj(["run", "plan"], {"dry_run": {"type": "boolean"}, "run": _ref("Run"),
                                           "plan": _ref("RerunPlan")}),
    "Cancel": _obj([], {"reason": NSTR}, extra=False),
    "Job": _obj(["job_id", "run_id", "step_id", "attempt", "topic", "status"], {
        "job_id": STR, "run_id": STR, "step_id": STR, "attempt": INT, "topic": STR,
        "status": STR, "input": ANY, "upstream": ANY, "constraints": ANY, "checkpoint": ANY,
        "result": ANY, "error": ANY, "worker": NSTR, "lease_expires_at": TIME}),
    "JobList": _list("Job"),
    "PolicyDecision": _obj(["decision_id", "stage", "decision", "reason"], {
        "decision_id": INT, "stage": STR, "snapshot_hash": NSTR, "rule": NSTR,
        "decision": STR, "reason": STR, "constraints": ANY, "run_id": STR, "step_id": STR,
        "job_id": NSTR, "at": TIME}),
    "DecisionList": _list("PolicyDecision", cursor=False),
    "Approval": _obj(["id", "run_id", "step_id", "status", "kind"], {
        "id": STR, "approval_id": STR, "run_id": STR, "step_id": STR, "job_id": NSTR,
        "kind": STR, "status": STR, "policy_snapshot_hash": NSTR, "job_hash": NSTR,
        "requested_by": STR, "requested_at": TIME, "expires_at": TIME, "decided_by": NSTR,
        "decided_at": TIME, "reason": NSTR}),
    "ApprovalDetail": {"allOf": [_ref("Approval"), _obj([], {"job": {"type": "object"}})]},
    "ApprovalList": _list("Approval"),
    "ApprovalDecision": _obj([], {"reason": NSTR, "job_hash": NSTR}, extra=False),
    "PolicyBundle": {"type": "object", "description": "docs/policy.md, as YAML or JSON"},
    "Snapshot": _obj(["snapshot_hash", "bundle", "active"], {
        "snapshot_hash": STR, "bundle": {"type": "object"}, "created_by": STR,
        "created_at": TIME, "active": {"type": "boolean"}}),
    "SnapshotList": _obj(["active", "items"], {
        "active": NSTR, "items": {"type": "array", "items": _ref("Snapshot")}}),
    "Activation": _obj(["snapshot_hash", "previous_hash"], {
        "snapshot_hash": STR, "previous_hash": NSTR, "activated_by": STR,
        "activated_at": TIME}),
    "Facts": _obj(["topic"], {
        "topic": STR, "workflow_id": STR, "step_id": STR,
        "risk_tags": {"type": "array", "items": STR}, "capability": STR,
        "labels": {"type": "object", "additionalProperties": STR}, "input": ANY}, extra=False),
    "Evaluation": _obj(["decision", "rule", "reason", "constraints", "snapshot_hash"], {
        "decision": {"enum": ["allow", "deny", "require_approval", "allow_with_constraints"]},
        "rule": NSTR, "reason": STR, "constraints": {"type": "object"},
        "snapshot_hash": NSTR}),
}

_PARAM = re.compile(r"{(\w+)}")


def _operation(ep: Endpoint) -> S:
    op: S = {"summary": ep.summary, "operationId": ep.handler.__name__, "responses": {}}
    params: list[S] = [{"name": n, "in": "path", "required": True, "schema": STR}
                       for n in _PARAM.findall(ep.path)]
    params += [{"name": n, "in": "query", "required": False, "schema": STR} for n in ep.query]
    params += [{"name": h, "in": "header", "required": False, "schema": STR}
               for h in ep.headers]
    if ep.roles:
        params += [{"name": "X-Tenant-ID", "in": "header", "required": False, "schema": STR}]
        op["security"] = [{"ApiKey": []}]
        op["description"] = "Roles: " + ", ".join(r.value for r in ep.roles) + " (or admin)."
    if params:
        op["parameters"] = params
    if ep.request:
        op["requestBody"] = {"required": True, "content": {
            media: {"schema": _ref(ep.request)} for media in ep.request_media}}
    problem = {"application/problem+json": {"schema": _ref("Problem")}}
    for status, schema in ep.responses.items():
        if schema == "Problem":
            op["responses"][str(status)] = {"description": "problem", "content": problem}
        elif schema is None:
            op["responses"][str(status)] = {"description": "ok"}
        else:
            op["responses"][str(status)] = {
                "description": "ok", "content": {"application/json": {"schema": _ref(schema)}}}
    for status in (400, 401, 403, 413) if ep.roles else ():
        op["responses"].setdefault(str(status), {"description": "problem", "content": problem})
    return op


def document(endpoints: list[Endpoint], prefix: str) -> S:
    paths: S = {}
    for ep in endpoints:
        paths.setdefault(prefix + ep.path, {})[ep.method.lower()] = _operation(ep)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Warden", "version": "1",
                 "description": "Durable, governed workflow runs."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }
