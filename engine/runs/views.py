"""The public JSON shapes of Warden's objects, shared by the CLI's --json and the API."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from engine.runs.lifecycle import RunDetail
from engine.store.records import (
    ApprovalRow,
    JobRow,
    PolicyDecisionRow,
    RunRow,
    StepRow,
    TimelineEvent,
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run(row: RunRow) -> dict[str, Any]:
    return {
        "run_id": str(row.run_id), "tenant_id": row.tenant_id, "workflow_id": row.workflow_id,
        "workflow_version": row.workflow_version, "status": row.status.value,
        "input": row.input, "output": row.output, "error": row.error,
        "idempotency_key": row.idempotency_key,
        "rerun_of": str(row.rerun_of) if row.rerun_of else None,
        "created_by": row.created_by, "created_at": _time(row.created_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
    }


def step(row: StepRow, job_ids: list[str]) -> dict[str, Any]:
    return {
        "step_id": row.step_id, "type": row.type.value, "status": row.status.value,
        "depends_on": row.depends_on, "attempts": row.attempts, "job_ids": job_ids,
        "output": row.output, "error": row.error, "retry_at": _time(row.retry_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
    }


def job(row: JobRow) -> dict[str, Any]:
    return {
        "job_id": row.job_id, "run_id": str(row.run_id), "step_id": row.step_id,
        "attempt": row.attempt, "topic": row.topic, "status": row.status.value,
        "input": row.input, "upstream": row.upstream, "constraints": row.constraints,
        "checkpoint": row.checkpoint, "result": row.result, "error": row.error,
        "worker": row.worker, "lease_expires_at": _time(row.lease_expires_at),
        "available_at": _time(row.available_at), "created_at": _time(row.created_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
    }


def approval(row: ApprovalRow) -> dict[str, Any]:
    return {
        "id": str(row.approval_id), "approval_id": str(row.approval_id),
        "run_id": str(row.run_id), "step_id": row.step_id, "job_id": row.job_id,
        "kind": row.kind, "status": row.status.value,
        "policy_snapshot_hash": row.policy_snapshot_hash, "job_hash": row.job_hash,
        "requested_by": row.requested_by, "requested_at": _time(row.requested_at),
        "expires_at": _time(row.expires_at), "decided_by": row.decided_by,
        "decided_at": _time(row.decided_at), "reason": row.reason,
    }


def run_detail(detail: RunDetail) -> dict[str, Any]:
    job_ids: dict[str, list[str]] = defaultdict(list)
    for row in detail.jobs:
        job_ids[row.step_id].append(row.job_id)
    return {**run(detail.run),
            "steps": [step(s, job_ids[s.step_id]) for s in detail.steps],
            "jobs": [job(j) for j in detail.jobs],
            "approvals": [approval(a) for a in detail.approvals]}


def event(row: TimelineEvent) -> dict[str, Any]:
    return {
        "seq": row.seq, "at": _time(row.at), "kind": row.kind, "step_id": row.step_id,
        "job_id": row.job_id, "attempt": row.attempt, "actor": row.actor, "data": row.data,
        "prev_hash": row.prev_hash, "hash": row.hash, "key_id": row.key_id,
    }


def decision(row: PolicyDecisionRow) -> dict[str, Any]:
    return {
        "decision_id": row.decision_id, "stage": row.stage, "snapshot_hash": row.snapshot_hash,
        "rule": row.rule, "decision": row.decision, "reason": row.reason,
        "constraints": row.constraints, "run_id": str(row.run_id), "step_id": row.step_id,
        "job_id": row.job_id, "at": _time(row.at),
    }
