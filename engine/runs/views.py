"""The public JSON shapes of Warden's objects, shared by the CLI's --json and the API."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.core import cursors
from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.runs import flowview
from engine.runs.lifecycle import RunDetail
from engine.store.gates import GateWait
from engine.store.records import (
    ApprovalRow,
    ItemRow,
    JobRow,
    PolicyDecisionRow,
    QueueRow,
    RunRow,
    SentEvent,
    StepRow,
    TimelineEvent,
    WorkerRow,
    WorkflowRow,
)

if TYPE_CHECKING:
    from engine.runs.reruns import RerunPlan


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def workflow(row: WorkflowRow) -> dict[str, Any]:
    return {"workflow_id": row.workflow_id, "version": row.version, "name": row.name,
            "digest": row.digest, "definition": row.definition, "created_by": row.created_by,
            "created_at": row.created_at.isoformat()}


def run(row: RunRow) -> dict[str, Any]:
    """A run as lists show it; ``summary`` is one readable line (the page's headline)."""
    return {
        "run_id": str(row.run_id), "tenant_id": row.tenant_id, "workflow_id": row.workflow_id,
        "workflow_version": row.workflow_version, "status": row.status.value,
        "input": row.input, "output": row.output, "error": row.error,
        "idempotency_key": row.idempotency_key,
        "rerun_of": str(row.rerun_of) if row.rerun_of else None,
        "created_by": row.created_by, "created_at": _time(row.created_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
        "denied_by": denied_by(row), "summary": run_summary(row),
        # a child run of a `workflow` step (docs/workflows.md#sub-workflows)
        "parent_run_id": str(row.parent_run_id) if row.parent_run_id else None,
        "parent_step_id": row.parent_step_id, "parent_item_index": row.parent_item_index,
    }


def step(row: StepRow, job_ids: list[str], latest: JobRow | None = None,
         live_workers: Mapping[str, int] | None = None,
         as_of: datetime | None = None, gate: GateWait | None = None) -> dict[str, Any]:
    """A step of a run. ``state`` is what is happening now: the step's status, but for a
    running job step whose attempt waits for a worker (``pending``) or for an approval
    (``blocked``); ``note`` says it in words (the error of a failed step, or that no live
    worker polls the topic of its pending job)."""
    state, note = _step_state(row, latest, live_workers or {}, as_of)
    if state == "pending" and gate is not None:
        note = gate_note(gate) or note
    return {
        "step_id": row.step_id, "type": row.type.value, "status": row.status.value,
        "state": state, "note": note, "topic": row.topic,
        "depends_on": row.depends_on, "attempts": row.attempts, "job_ids": job_ids,
        "output": row.output, "error": row.error, "retry_at": _time(row.retry_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
    }


def _step_state(row: StepRow, latest: JobRow | None, live_workers: Mapping[str, int],
                as_of: datetime | None) -> tuple[str, str | None]:
    if row.error is not None and row.status.is_final:
        return row.status.value, error_text(row.error)
    if row.status is not StepStatus.RUNNING or latest is None:
        return row.status.value, None
    if latest.status is JobStatus.PENDING and as_of is not None and latest.available_at > as_of:
        return "retry_scheduled", (f"attempt {latest.attempt} waits for its backoff, until "
                                   f"{latest.available_at.isoformat()}")
    if latest.status is JobStatus.PENDING:
        live = live_workers.get(latest.topic, 0)
        if live == 0:
            return "pending", f"pending: no live worker polls topic {latest.topic}"
        return "pending", (f"pending: {live} live worker{'s' if live > 1 else ''} poll"
                           f"{'' if live > 1 else 's'} topic {latest.topic}")
    if latest.status is JobStatus.BLOCKED:
        return "blocked", "blocked: waiting for an approval"
    if latest.status is JobStatus.RUNNING:
        return "running", f"running on {latest.worker}" if latest.worker else None
    if row.retry_at is not None:
        return "retry_scheduled", f"retry at {row.retry_at.isoformat()}"
    return row.status.value, None


def gate_note(gate: GateWait) -> str | None:
    """Why a pending job is held back by its gates, in words; None if no gate is closed
    right now (it is next in line)."""
    if gate.concurrency_limit is not None and gate.running is not None \
            and gate.running >= gate.concurrency_limit:
        return (f"waiting for concurrency key {gate.concurrency_key} "
                f"({gate.running}/{gate.concurrency_limit} running)")
    if gate.rate_limit is not None and gate.claims_in_window is not None \
            and gate.claims_in_window >= gate.rate_limit and gate.rate_free_at is not None:
        return (f"rate limited until {gate.rate_free_at.isoformat()} (rate key "
                f"{gate.rate_key}: {gate.claims_in_window}/{gate.rate_limit} claims per "
                f"{gate.rate_per_ms} ms)")
    return None


def error_text(error: Any) -> str | None:
    """One readable line for an error document: the exception type and its message, or
    who denied, rejected or cancelled and why (never raw JSON)."""
    if error is None:
        return None
    if not isinstance(error, dict):
        return str(error)
    kind, reason = error.get("type"), error.get("reason")
    if kind == "PolicyDenied":
        rule = error.get("rule")
        by = f"rule {rule}" if rule else "the default decision"
        return f"denied by policy ({by})" + (f": {reason}" if reason else "")
    if kind == "ApprovalRejected":
        return f"rejected by {error.get('decided_by')}" + (f": {reason}" if reason else "")
    if kind == "ApprovalExpired":
        return "the approval expired without a decision"
    if kind == "RunCancelled":
        return f"cancelled by {error.get('by')}" + (f": {reason}" if reason else "")
    if kind == "RunDeadline":
        return f"the run's deadline passed ({error.get('deadline_at')})"
    message = error.get("message") or reason
    if kind and message:
        return f"{kind}: {message}"
    return str(kind or message or json.dumps(error, sort_keys=True, default=str))


def _step_errors(row: RunRow) -> list[tuple[str | None, Any]]:
    """A final run's error as (step id, error) pairs; a run-level error (cancel, deadline)
    has no step."""
    error = row.error
    if not isinstance(error, dict):
        return [] if error is None else [(None, error)]
    if "type" in error:
        return [(None, error)]
    return [(str(sid), e) for sid, e in error.items()]


def denied_by(row: RunRow) -> str | None:
    """Who ended a denied run: ``policy`` (a rule or the default decision) or ``approval``
    (a human rejected it); None for any other status."""
    if row.status is not RunStatus.DENIED:
        return None
    kinds = {e.get("type") for _, e in _step_errors(row) if isinstance(e, dict)}
    if "PolicyDenied" in kinds:
        return "policy"
    return "approval" if "ApprovalRejected" in kinds else None


def run_summary(row: RunRow, steps: Sequence[dict[str, Any]] = ()) -> str:
    """The headline: what the run is doing or how it ended, in one line."""
    status = row.status
    if status is RunStatus.SUCCEEDED:
        return "Succeeded"
    if status.is_final:
        order = {s["step_id"]: i for i, s in enumerate(steps)}
        found = sorted(_step_errors(row), key=lambda e: order.get(e[0] or "", -1))
        label = {"timed_out": "Timed out"}.get(status.value, status.value.capitalize())
        if not found:
            return label
        sid, error = found[0]
        text = error_text(error) or ""
        if sid is None and text.lower().startswith(label.lower()):
            return text[0].upper() + text[1:]  # "Cancelled by olga: …", not "Cancelled: c…"
        where = f" at step {sid}" if sid else ""
        return f"{label}{where}: {text}"
    if status is RunStatus.WAITING:
        waits = [s for s in steps if s["status"] == "waiting"]
        # timers and event waits (engine/runs/flowview.py) say what they wait for
        timed = [f"{s['step_id']} ({s['note']})" if s["note"] else s["step_id"]
                 for s in waits if s["type"] in ("sleep", "wait_event")]
        gates = [s["step_id"] for s in waits if s["type"] not in ("sleep", "wait_event")]
        if timed:
            return "Waiting: " + ", ".join(
                timed + ([f"approval of step {', '.join(gates)}"] if gates else []))
        return ("Waiting for approval" + (f" of step {', '.join(gates)}" if gates else ""))
    active = [f"{s['step_id']} ({s['note']})" if s["note"] else s["step_id"]
              for s in steps if s["status"] in ("running", "waiting")]
    label = "Pending" if status is RunStatus.PENDING else "Running"
    return f"{label}: {', '.join(active)}" if active else label


def job(row: JobRow) -> dict[str, Any]:
    return {
        "job_id": row.job_id, "run_id": str(row.run_id), "step_id": row.step_id,
        "attempt": row.attempt, "topic": row.topic, "status": row.status.value,
        "input": row.input, "upstream": row.upstream, "constraints": row.constraints,
        "checkpoint": row.checkpoint, "result": row.result, "error": row.error,
        "worker": row.worker, "lease_expires_at": _time(row.lease_expires_at),
        "available_at": _time(row.available_at), "created_at": _time(row.created_at),
        "started_at": _time(row.started_at), "finished_at": _time(row.finished_at),
        # flow control (docs/workflows.md#concurrency-and-rate-limits); null: no gate
        "concurrency": {"key": row.concurrency_key, "limit": row.concurrency_limit}
        if row.concurrency_key else None,
        "rate_limit": {"key": row.rate_key, "limit": row.rate_limit,
                       "per_ms": row.rate_per_ms} if row.rate_key else None,
    }


def approval(row: ApprovalRow) -> dict[str, Any]:
    return {
        "approval_id": str(row.approval_id),
        "run_id": str(row.run_id), "step_id": row.step_id, "job_id": row.job_id,
        "kind": row.kind, "status": row.status.value,
        "policy_snapshot_hash": row.policy_snapshot_hash, "job_hash": row.job_hash,
        "requested_by": row.requested_by, "requested_at": _time(row.requested_at),
        "expires_at": _time(row.expires_at), "decided_by": row.decided_by,
        "decided_at": _time(row.decided_at), "reason": row.reason, "barred": row.barred,
    }


def run_detail(detail: RunDetail) -> dict[str, Any]:
    """A run with its steps in the definition's order, attempts and approvals."""
    job_ids: dict[str, list[str]] = defaultdict(list)
    latest: dict[str, JobRow] = {}
    for row in detail.jobs:
        job_ids[row.step_id].append(row.job_id)
        if row.step_id not in latest or row.attempt > latest[row.step_id].attempt:
            latest[row.step_id] = row
    steps = [flowview.annotate(step(s, job_ids[s.step_id], latest.get(s.step_id),
                                    detail.live_workers, detail.as_of,
                                    _gate_of(detail, latest.get(s.step_id))),
                               detail.flow.get(s.step_id)) for s in detail.steps]
    _flows(steps, detail)
    return {**run(detail.run), "summary": run_summary(detail.run, steps), "steps": steps,
            "jobs": [job(j) for j in detail.jobs],
            "approvals": [approval(a) for a in detail.approvals],
            "children": [child_run(c) for c in detail.children],
            "started_by_event": started_by_event(detail)}


def started_by_event(detail: RunDetail) -> dict[str, Any] | None:
    """The event that started the run (docs/workflows.md#event-started-runs); its key is
    None once the event itself is no longer kept."""
    row = detail.started_by_event
    if row is None:
        return None
    return {"event_id": row.event_id, "name": row.event_name, "key": row.event_key,
            "started_at": _time(row.created_at)}


def child_run(row: RunRow) -> dict[str, Any]:
    """A child run as its parent's document links it."""
    return {"run_id": str(row.run_id), "workflow_id": row.workflow_id,
            "workflow_version": row.workflow_version, "status": row.status.value,
            "step_id": row.parent_step_id, "item_index": row.parent_item_index,
            "attempt": row.parent_attempt, "summary": run_summary(row)}


def _flows(steps: list[dict[str, Any]], detail: RunDetail) -> None:
    """Adds ``items`` to each for_each step (counts by status, and each item with its
    attempts, latest job and child run) and ``children`` to each workflow step."""
    items: dict[str, list[ItemRow]] = defaultdict(list)
    for item in detail.items:
        items[item.step_id].append(item)
    latest: dict[tuple[str, int], JobRow] = {}
    for row in detail.jobs:
        if row.item_index is not None:
            key = (row.step_id, row.item_index)
            if key not in latest or row.attempt > latest[key].attempt:
                latest[key] = row
    kids: dict[tuple[str, int | None], RunRow] = {}
    for child in detail.children:  # oldest first: the newest attempt's child stays
        kids[(child.parent_step_id or "", child.parent_item_index)] = child
    for doc in steps:
        sid = doc["step_id"]
        if sid in items:
            rows = items[sid]
            counts: dict[str, int] = defaultdict(int)
            for item in rows:
                counts[item.status.value] += 1
            doc["items"] = {"total": len(rows), "by_status": dict(counts), "list": [{
                "item_index": i.item_index, "status": i.status.value, "attempts": i.attempts,
                "job_id": latest[(sid, i.item_index)].job_id
                if (sid, i.item_index) in latest else None,
                "child_run_id": str(kids[(sid, i.item_index)].run_id)
                if (sid, i.item_index) in kids else None,
                "error": error_text(i.error)} for i in rows]}
        mine = [child_run(c) for c in detail.children if c.parent_step_id == sid]
        if mine:
            doc["children"] = mine


def _gate_of(detail: RunDetail, latest: JobRow | None) -> GateWait | None:
    return None if latest is None else detail.gates.get(latest.job_id)


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


# Lists: every list, in the API and with the CLI's --json, is {"items": [...],
# "next_cursor": str | None}; the cursor goes back as ``cursor``.


def run_page(rows: Sequence[RunRow], page_size: int) -> dict[str, Any]:
    last = rows[-1] if len(rows) == page_size and rows else None
    return {"items": [run(r) for r in rows],
            "next_cursor": cursors.encode(last.created_at, str(last.run_id)) if last else None}


def approval_page(rows: Sequence[ApprovalRow], page_size: int,
                  context: Mapping[UUID, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The approvals queue; with ``context`` (engine.approvals.queue), each item also says
    what it is about: ``workflow_id``, ``workflow_version``, ``run_status``, ``topic``
    (the held job's, policy approvals), ``then`` (the steps it lets run), ``summary``."""
    last = rows[-1] if len(rows) == page_size and rows else None
    items = []
    for a in rows:
        doc = approval(a)
        about = (context or {}).get(a.approval_id)
        if about is not None:
            doc.update(about, summary=_approval_summary(a, about))
        items.append(doc)
    return {"items": items,
            "next_cursor": (cursors.encode(last.requested_at, str(last.approval_id))
                            if last else None)}


def _approval_summary(row: ApprovalRow, about: Mapping[str, Any]) -> str:
    what = (f"job {row.step_id} on topic {about['topic']}" if about.get("topic")
            else f"step {row.step_id}")
    then = f", then {', '.join(about['then'])}" if about.get("then") else ""
    return f"{what} of {about['workflow_id']}@{about['workflow_version']}{then}"


def event_page(events: Sequence[TimelineEvent], page_size: int | None) -> dict[str, Any]:
    """A page of a timeline; its cursor is the last seq (``None``: the whole history)."""
    more = page_size is not None and len(events) == page_size and events
    return {"items": [event(e) for e in events],
            "next_cursor": str(events[-1].seq) if more else None}


def run_started(detail: RunDetail, *, replayed: bool,
                plan: RerunPlan | None = None) -> dict[str, Any]:
    """What starting a run answers, and a rerun: the run document, whether an
    idempotency key replayed it, and for a rerun the plan it followed."""
    doc = {**run_detail(detail), "replayed": replayed}
    if plan is not None:
        doc["plan"] = plan.to_doc()
    return doc


def sent_event(row: SentEvent, *, replayed: bool) -> dict[str, Any]:
    """An event as POST /api/v1/events answers it."""
    return {"event_id": row.event_id, "name": row.name, "key": row.key, "data": row.data,
            "sent_by": row.sent_by, "received_at": _time(row.received_at),
            "expires_at": _time(row.expires_at), "replayed": replayed}


def rerun_plan(plan: RerunPlan) -> dict[str, Any]:
    """A dry run's answer: the plan, nothing written."""
    return {"dry_run": True, **plan.to_doc()}


def approval_detail(row: ApprovalRow, job_row: JobRow | None,
                    lets_run: dict[str, Any]) -> dict[str, Any]:
    """An approval and what it lets run: for a policy approval, the held job's topic,
    rendered input, upstream outputs and constraints (what ``job_hash`` covers); and
    ``lets_run`` (engine.approval_plan): the step or rule that asked, the values the hash
    binds, whether the stored hash still matches them, and every later step."""
    doc = {**approval(row), "lets_run": lets_run}
    if job_row is not None:
        doc["job"] = {"topic": job_row.topic, "input": job_row.input,
                      "upstream": job_row.upstream, "constraints": job_row.constraints,
                      "status": job_row.status.value}
    return doc


def worker(row: WorkerRow) -> dict[str, Any]:
    return {
        "worker_id": str(row.worker_id), "name": row.name, "state": row.state,
        "host": row.host, "pid": row.pid, "topics": row.topics,
        "concurrency": row.concurrency, "jobs_in_flight": row.jobs_in_flight,
        "version": row.version, "heartbeat_ms": row.heartbeat_ms,
        "started_at": _time(row.started_at), "last_seen_at": _time(row.last_seen_at),
        "stopped_at": _time(row.stopped_at),
    }


def queue(row: QueueRow) -> dict[str, Any]:
    return {
        "topic": row.topic, "depth": row.depth, "ready": row.ready,
        "oldest_age_s": row.oldest_age_s, "running": row.running,
        "claimed_last_minute": row.claimed_last_minute, "live_workers": row.live_workers,
        "workers": row.workers,
        "unattended": row.depth > 0 and row.live_workers == 0,
    }
