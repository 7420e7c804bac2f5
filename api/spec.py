"""The OpenAPI 3.1 document, generated from the route registry and these schemas."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from api.registry import Endpoint
from engine.core.enums import ApprovalStatus, JobStatus, RunStatus

S = dict[str, Any]


def _obj(required: list[str], props: S, *, extra: bool = True) -> S:
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": extra}


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: str) -> S:
    """Every list: its items and the cursor of the next page (null on the last one)."""
    return _obj(["items", "next_cursor"], {"items": {"type": "array", "items": _ref(item)},
                                           "next_cursor": {"type": ["string", "null"]}})


STR, NSTR = {"type": "string"}, {"type": ["string", "null"]}
# What a request may send: PostgreSQL text and jsonb hold no U+0000 (refused with a 400),
# and JSON values nest as "Json" does (NaN, Infinity and 1e400 are no JSON numbers).
NO_NUL = "^[^\\u0000]*$"
TEXT, NTEXT = {**STR, "pattern": NO_NUL}, {**NSTR, "pattern": NO_NUL}
JSON_OBJECT: S = {"type": "object", "propertyNames": TEXT,
                  "additionalProperties": {"$ref": "#/components/schemas/Json"}}
INT: S = {"type": "integer"}
ANY: S = {}
TIME = {"type": ["string", "null"], "format": "date-time"}
RUN_STATUS = {"enum": [s.value for s in RunStatus]}

SCHEMAS: S = {
    "Json": {"anyOf": [{"type": ["null", "boolean", "number"]}, TEXT,
                       {"type": "array", "items": {"$ref": "#/components/schemas/Json"}},
                       JSON_OBJECT]},
    "Problem": _obj(["type", "title", "status", "detail"], {
        "type": STR, "title": STR, "status": INT, "detail": STR,
        "errors": {"type": "array", "items": _obj(["message"], {"field": NSTR,
                                                               "message": STR})}}),
    "Health": _obj(["status"], {"status": STR}),
    "Whoami": _obj(["principal", "key_id", "roles", "tenants", "tenant"], {
        "principal": {"type": "string", "description": "the name recorded as actor"},
        "key_id": STR, "roles": {"type": "array", "items": STR},
        "tenants": {"type": "array", "items": STR},
        "tenant": {"type": "string", "description": "the tenant of this call (X-Tenant-ID)"}}),
    # the fields the server demands are required here; the rest of a definition's rules
    # (step fields, the DAG, references) are docs/workflows.md's and docs/policy.md's,
    # refused with a 422 naming the field. An optional field may be null (= absent).
    "WorkflowDefinition": {**_obj(["id", "name", "version", "steps"], {
        "id": STR, "name": STR, "version": STR, "timeout_ms": {"type": ["integer", "null"]},
        "steps": {"type": "object", "additionalProperties": {"type": "object"}},
        "output": {"type": ["object", "null"]}}, extra=False),
        "description": "a workflow (docs/workflows.md), as YAML or JSON"},
    "Workflow": _obj(["workflow_id", "version", "name", "digest", "definition"], {
        "workflow_id": STR, "version": STR, "name": STR, "digest": STR,
        "definition": {"type": "object"}, "created_by": STR, "created_at": TIME}),
    "WorkflowList": _list("Workflow"),
    "WorkflowVersions": _obj(["workflow_id", "versions"], {
        "workflow_id": STR, "versions": {"type": "array", "items": _ref("Workflow")}}),
    "StartRun": _obj([], {"input": JSON_OBJECT, "version": NTEXT,
                          # docs/workflows.md#priority: 0..9, lower first
                          "priority": {"type": ["integer", "null"], "minimum": 0,
                                       "maximum": 9}}, extra=False),
    "Run": _obj(["run_id", "workflow_id", "workflow_version", "status", "input"], {
        "run_id": STR, "tenant_id": STR, "workflow_id": STR, "workflow_version": STR,
        "status": RUN_STATUS, "input": ANY, "output": ANY, "error": ANY,
        "idempotency_key": NSTR, "rerun_of": NSTR, "created_by": STR, "created_at": TIME,
        "started_at": TIME, "finished_at": TIME,
        "denied_by": {"enum": ["policy", "approval", None],
                      "description": "who ended a denied run: a policy rule (or the default "
                                     "decision), or a human who rejected an approval"},
        "summary": {"type": "string", "description": "one readable line: what the run is "
                    "doing or how it ended (error type and message, who denied and why)"},
        "parent_run_id": NSTR, "parent_step_id": NSTR,
        "parent_item_index": {"type": ["integer", "null"],
                              "description": "a child run's parent run, step and item"}}),
    "Step": _obj(["step_id", "type", "status", "state", "attempts", "job_ids"], {
        "step_id": STR, "type": STR, "status": STR,
        "state": {"type": "string", "description": "what happens now: the status, but "
                  "pending (waiting for a worker) or blocked (for an approval) for a running "
                  "step whose attempt is not claimed yet"},
        "note": {"type": ["string", "null"], "description": "the state in words, e.g. "
                 "'pending: no live worker polls topic X', or the error of a failed step"},
        "topic": NSTR, "attempts": INT, "output": ANY,
        "error": ANY, "depends_on": {"type": "array", "items": STR},
        "job_ids": {"type": "array", "items": STR},
        "flow": {"type": "object", "description": "control flow (docs/workflows.md"
                 "#control-flow): when and condition {result, read}, trigger, timer "
                 "{fire_at}, waits_for {event, key, timeout_at}, matched (the event taken)"},
        "items": {"type": "object", "description": "a for_each step's items: total, "
                  "by_status counts, and list (item_index, status, attempts, job_id, "
                  "child_run_id, error)"},
        "children": {"type": "array", "items": {"type": "object"},
                     "description": "a workflow step's child runs"}}),
    "RunDetail": {"allOf": [_ref("Run"), _obj(["steps", "jobs", "approvals"], {
        "children": {"type": "array", "items": {"type": "object"},
                     "description": "the run's child runs (run_id, workflow_id, "
                                    "workflow_version, status, step_id, item_index, "
                                    "attempt, summary)"},
        "steps": {"type": "array", "items": _ref("Step"),
                  "description": "in the definition's order"},
        "jobs": {"type": "array", "items": _ref("Job")},
        "approvals": {"type": "array", "items": _ref("Approval")},
        "started_by_event": {
            "type": ["object", "null"],
            "description": "the event that started the run (docs/workflows.md"
                           "#event-started-runs): event_id, name, key (null once the "
                           "event is no longer kept), started_at; null for a run no "
                           "event started",
            "properties": {"event_id": STR, "name": STR, "key": NSTR, "started_at": TIME}}})]},
    "RunStarted": {"allOf": [_ref("RunDetail"), _obj(["replayed"], {
        "replayed": {"type": "boolean", "description": "true: the Idempotency-Key had "
                     "already started this run (200, Idempotent-Replayed: true)"},
        "plan": _ref("RerunPlan")})],
        "description": "What a start (201, or 200 on a replay) and a rerun (201) answer: the "
                       "run document, plus the plan it followed for a rerun."},
    "StartRuns": _obj(["items"], {"items": {
        "type": "array", "minItems": 1, "maxItems": 1000,
        # an item is checked on its own (a bad one is refused in its result, 422, and
        # spoils no other), so the schema of an item constrains nothing
        "items": {"description": "one run to start: {input: object, idempotency_key: 1 "
                  "to 255 characters, version: a stored version (default: the newest)}",
                  "properties": {"input": {"description": "a JSON object (default {})"},
                                 "idempotency_key": {"description": "string or null"},
                                 "version": {"description": "string or null"}}}}},
        extra=False),
    "RunsStarted": _obj(["items"], {"items": {"type": "array", "items": _obj(
        ["index", "status"], {
            "index": INT,
            "status": {"type": "integer", "description": "what a single start would have "
                       "answered: 201 started, 200 replayed, 403 denied at submit (the run "
                       "is stored denied), 404, 409 or 422 (nothing started)"},
            "replayed": {"type": "boolean"}, "run": _ref("Run"),
            "problem": _ref("Problem")})}},
        extra=False),
    "RunList": _list("Run"),
    "TimelineEvent": _obj(["seq", "at", "kind", "data", "prev_hash", "hash"], {
        "seq": INT, "at": TIME, "kind": STR, "step_id": NSTR, "job_id": NSTR,
        "attempt": {"type": ["integer", "null"]}, "actor": NSTR, "data": ANY,
        "prev_hash": STR, "hash": STR, "key_id": INT}),
    "Evidence": _obj(["run_id", "lines"], {
        "run_id": STR, "lines": {"type": "array", "items": {"type": "object"}}}),
    "Timeline": _list("TimelineEvent"),
    "Rerun": _obj(["from_step"], {"from_step": {**TEXT, "minLength": 1},
                                  "dry_run": {"type": "boolean"}}, extra=False),
    "RerunPlan": _obj(["rerun_of", "from_step", "reused", "to_run", "decisions",
                       "approvals_needed"], {
        "dry_run": {"type": "boolean"}, "rerun_of": STR, "from_step": STR,
        "reused": {"type": "array"}, "to_run": {"type": "array", "items": STR},
        "decisions": {"type": "object"}, "approvals_needed": {"type": "array", "items": STR},
        "barred_approvers": {"type": "array", "items": STR},
        "flow": {"type": "object", "description": "per step to run, what running it again "
                 "does in words: its items, a new child run, its timer, its wait, its condition"}}),
    "RerunCreated": _obj(["run", "plan"], {"dry_run": {"type": "boolean"}, "run": _ref("Run"),
                                           "plan": _ref("RerunPlan")}),
    "Cancel": _obj([], {"reason": NTEXT}, extra=False),
    "Event": _obj(["id", "name", "key"], {
        "id": {**TEXT, "minLength": 1, "maxLength": 200,
               "description": "the sender's id: the same id again is the same event"},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
        "key": {**TEXT, "maxLength": 512, "description": "the correlation a wait_event "
                "step's key renders to"},
        "data": {"$ref": "#/components/schemas/Json",
                 "description": "the waiting step's output; at most 64 KiB as JSON"}},
        extra=False),
    "EventStored": _obj(["event_id", "name", "key", "received_at", "replayed"], {
        "event_id": STR, "name": STR, "key": STR, "data": ANY, "sent_by": STR,
        "received_at": TIME, "expires_at": TIME,
        "replayed": {"type": "boolean", "description": "true: this id was sent before with "
                     "the same content; this is the stored event (200)"}}),
    "Job": _obj(["job_id", "run_id", "step_id", "attempt", "topic", "status"], {
        "job_id": STR, "run_id": STR, "step_id": STR, "attempt": INT, "topic": STR,
        "status": STR, "input": ANY, "upstream": ANY, "constraints": ANY, "checkpoint": ANY,
        "result": ANY, "error": ANY, "worker": NSTR, "lease_expires_at": TIME,
        # docs/workflows.md#concurrency-and-rate-limits: the gates fixed at dispatch
        "concurrency": {"type": ["object", "null"], "description": "{key, limit}"},
        "rate_limit": {"type": ["object", "null"], "description": "{key, limit, per_ms}"}}),
    "JobList": _list("Job"),
    "PolicyDecision": _obj(["decision_id", "stage", "decision", "reason"], {
        "decision_id": INT, "stage": STR, "snapshot_hash": NSTR, "rule": NSTR,
        "decision": STR, "reason": STR, "constraints": ANY, "run_id": STR, "step_id": STR,
        "job_id": NSTR, "at": TIME}),
    "DecisionList": _list("PolicyDecision"),
    "Approval": _obj(["approval_id", "run_id", "step_id", "status", "kind"], {
        "approval_id": STR, "run_id": STR, "step_id": STR, "job_id": NSTR,
        "kind": STR, "status": STR, "policy_snapshot_hash": NSTR, "job_hash": NSTR,
        "requested_by": STR, "requested_at": TIME, "expires_at": TIME, "decided_by": NSTR,
        "decided_at": TIME, "reason": NSTR, "barred": {"type": "array", "items": STR}}),
    "ApprovalDetail": {"allOf": [_ref("Approval"), _obj(["lets_run"], {
        "job": {"type": "object"},
        "lets_run": _obj(["covers", "job_hash_matches", "then"], {
            "run": {"type": "object"}, "gate": {"type": "object"},
            "asked_by": {"type": "object"},
            "covers": _obj([], {"topic": NSTR, "input": ANY, "upstream": ANY,
                                "constraints": ANY}),
            "job_hash": NSTR, "job_hash_matches": {"type": "boolean"},
            "policy_snapshot_hash": NSTR, "active_snapshot_hash": NSTR,
            "then": {"type": "array", "items": {"type": "object"}}})})]},
    "ApprovalQueueItem": {"allOf": [_ref("Approval"), _obj([], {
        "workflow_id": STR, "workflow_version": STR, "run_status": STR, "topic": NSTR,
        "then": {"type": "array", "items": STR,
                 "description": "the steps that run after it once approved"},
        "summary": {"type": "string", "description": "what it lets run, in one line"}})]},
    "ApprovalList": _list("ApprovalQueueItem"),
    "ApprovalDecision": _obj([], {"reason": NTEXT, "job_hash": NTEXT}, extra=False),
    "ApprovalRejection": _obj(["reason"], {"reason": {**TEXT, "minLength": 1,
                                                      "pattern": "\\S"},
                                           "job_hash": NTEXT}, extra=False),
    "Worker": _obj(["worker_id", "name", "state", "topics"], {
        "worker_id": STR, "name": STR,
        "state": {"enum": ["live", "dead", "stopped"], "description": "live: seen within "
                  "three heartbeats; dead: silent longer; stopped: exited cleanly"},
        "host": STR, "pid": INT, "topics": {"type": "array", "items": STR},
        "concurrency": INT, "jobs_in_flight": INT, "version": STR, "heartbeat_ms": INT,
        "started_at": TIME, "last_seen_at": TIME, "stopped_at": TIME}),
    "WorkerList": _list("Worker"),
    "Queue": _obj(["topic", "depth", "live_workers"], {
        "topic": STR, "depth": INT, "ready": INT,
        "oldest_age_s": {"type": ["number", "null"]}, "running": INT,
        "claimed_last_minute": INT, "live_workers": INT,
        "workers": {"type": "array", "items": STR},
        "unattended": {"type": "boolean",
                       "description": "pending jobs and no live worker polls the topic"}}),
    "QueueList": _list("Queue"),
    # cron schedules (docs/workflows.md#schedules)
    "Schedule": _obj(["workflow_id", "name", "cron", "timezone", "paused", "next_ticks"], {
        "tenant_id": STR, "workflow_id": STR, "name": STR, "workflow_version": STR,
        "cron": STR, "timezone": STR, "input": ANY,
        "overlap": {"enum": ["skip", "allow", "cancel_previous"]},
        "catch_up": {"enum": ["none", "last", "all"]}, "active": {"type": "boolean"},
        "paused": {"type": "boolean"}, "paused_by": NSTR, "paused_at": TIME,
        "last_tick": TIME, "last_run_id": NSTR, "last_outcome": NSTR,
        "next_ticks": {"type": "array", "items": {"type": "string", "format": "date-time"},
                       "description": "the next ticks that will start runs (none while "
                                      "paused)"}}),
    "ScheduleList": _list("Schedule"),
    "PolicyBundle": {**_obj(["default_decision"], {
        "name": NSTR, "description": NSTR,
        "default_decision": {"enum": ["allow", "deny", "require_approval"]},
        "default_reason": NSTR, "rules": {"type": ["array", "null"], "items": {"type": "object"}}},
        extra=False), "description": "a policy bundle (docs/policy.md), as YAML or JSON"},
    "Snapshot": _obj(["snapshot_hash", "bundle", "active"], {
        "snapshot_hash": STR, "bundle": {"type": "object"}, "created_by": STR,
        "created_at": TIME, "active": {"type": "boolean"}}),
    "SnapshotList": _obj(["active", "items"], {
        "active": NSTR, "items": {"type": "array", "items": _ref("Snapshot")},
        "next_cursor": {"type": ["string", "null"]}}),
    "Activation": _obj(["snapshot_hash", "previous_hash"], {
        "snapshot_hash": STR, "previous_hash": NSTR, "activated_by": STR,
        "activated_at": TIME}),
    "Facts": _obj(["topic"], {
        "topic": TEXT, "workflow_id": NTEXT, "step_id": NTEXT,
        "risk_tags": {"type": "array", "items": TEXT}, "capability": NTEXT,
        "labels": {"type": "object", "propertyNames": TEXT, "additionalProperties": TEXT},
        "input": JSON_OBJECT}, extra=False),
    "Evaluation": _obj(["decision", "rule", "reason", "constraints", "snapshot_hash"], {
        "decision": {"enum": ["allow", "deny", "require_approval", "allow_with_constraints"]},
        "rule": NSTR, "reason": STR, "constraints": {"type": "object"},
        "snapshot_hash": NSTR}),
}

# parameters that are not free text (limits are clamped to 1..500, `after` to 0..)
QUERY: S = {"limit": {"type": "integer", "description": "page size, clamped to 1..500"},
            "after": {"type": "integer", "description": "the last seq seen (default 0)"},
            "all": {"enum": ["true", "false"]},
            "denied_by": {"enum": ["policy", "approval"]},
            "id_prefix": {"type": "string", "pattern": "^[0-9a-fA-F-]{4,36}$",
                          "description": "4 to 32 hex digits of a run id (dashes allowed)"},
            "rerun_of": {"type": "string", "format": "uuid",
                         "pattern": "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                                    "[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"},
            "created_after": {"type": "string", "format": "date-time"},
            "created_before": {"type": "string", "format": "date-time"}}
STATUS_OF: dict[str, type[StrEnum]] = {"/workflow-runs": RunStatus, "/jobs": JobStatus,
                                       "/approvals": ApprovalStatus}
HEADERS: S = {"Idempotency-Key": {"type": "string", "minLength": 1, "maxLength": 255}}

_PARAM = re.compile(r"{(\w+)}")


def _operation(ep: Endpoint) -> S:
    op: S = {"summary": ep.summary, "operationId": ep.handler.__name__, "responses": {}}
    params: list[S] = [{"name": n, "in": "path", "required": True, "schema": STR}
                       for n in _PARAM.findall(ep.path)]
    # an empty query parameter (?limit=) is read as an absent one
    queries = {**QUERY, "status": {"enum": [s.value for s in STATUS_OF[ep.path]]}
               } if ep.path in STATUS_OF else QUERY
    params += [{"name": n, "in": "query", "required": False, "allowEmptyValue": True,
                "schema": queries.get(n, TEXT)} for n in ep.query]
    params += [{"name": h, "in": "header", "required": False, "schema": HEADERS.get(h, STR)}
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
