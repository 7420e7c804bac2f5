"""Starting runs (idempotently) and reading them with their steps."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.core import ids
from engine.core.canonical import require_storable, sha256_hex
from engine.core.enums import JobStatus, RunStatus, StepStatus, StepType
from engine.core.errors import IdempotencyConflict, InvalidInput, NotFound, PolicyDenied
from engine.definitions.model import WorkflowDef
from engine.definitions.workflows import resolve
from engine.governance.decisions import DecisionBatch, Evaluated, facts_for
from engine.governance.policy import Verdict
from engine.process import tracing
from engine.runs import flowview, subflows
from engine.store import Conn, Database
from engine.store import approvals as approvals_q
from engine.store import event_starts as event_starts_q
from engine.store import gates as gates_q
from engine.store import items as items_q
from engine.store import jobs as jobs_q
from engine.store import runs as q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store import workers as workers_q
from engine.store.event_starts import EventStartRow
from engine.store.gates import GateWait
from engine.store.records import ApprovalRow, ItemRow, JobRow, RunRow, StepRow

if TYPE_CHECKING:
    from engine.runs.services import Services

MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class StartedRun:
    run: RunRow
    replayed: bool  # True: the idempotency key had already started this run


@dataclass(frozen=True)
class RunDetail:
    run: RunRow
    steps: list[StepRow]  # in the definition's topological order
    jobs: list[JobRow]
    approvals: list[ApprovalRow]
    # live workers polling the topic of each pending job (0: nobody will take it)
    live_workers: dict[str, int] = field(default_factory=dict)
    as_of: datetime | None = None  # the database's time when this was read
    # control flow per step id (engine/runs/flowview.py)
    flow: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: list[ItemRow] = field(default_factory=list)  # of its for_each steps, in order
    children: list[RunRow] = field(default_factory=list)  # its child runs, oldest first
    # pending jobs held back by a concurrency key or rate limit, by job id
    gates: dict[str, GateWait] = field(default_factory=dict)
    # the event that started it (docs/workflows.md#event-started-runs), None for most runs
    started_by_event: EventStartRow | None = None


def step_rows(workflow: WorkflowDef) -> list[dict[str, Any]]:
    return [{
        "step_id": step.id, "type": step.type.value, "depends_on": list(step.depends_on),
        "topic": step.topic, "max_attempts": step.retries.max_attempts,
        "backoff_ms": step.retries.backoff_ms, "max_backoff_ms": step.retries.max_backoff_ms,
        "multiplier": step.retries.multiplier, "jitter": step.retries.jitter,
        "timeout_ms": step.timeout_ms, "priority": step.priority,
    } for step in workflow.steps.values()]


def check_input(value: Any) -> dict[str, Any]:
    """A run input as the submit gate sees it, and as /policy/evaluate takes it: a JSON
    object that PostgreSQL can store (InvalidInput names the field inside ``input``)."""
    if not isinstance(value, dict):
        raise InvalidInput("input", "must be a JSON object")
    require_storable(value, "input")
    return value


async def start(svc: Services, *, tenant_id: str, workflow_id: str, input: Any,
                created_by: str, idempotency_key: str | None = None,
                version: str | None = None, priority: int | None = None,
                started_by_event: Mapping[str, Any] | None = None) -> StartedRun:
    """Creates a run pinned to one workflow version, or replays the run an idempotency key
    already created. The unique constraint runs_idempotency arbitrates concurrent starts.

    The submit gate evaluates every job step against the run input; on any deny the run
    is stored ``denied`` with its decisions and PolicyDenied is raised after the commit.
    """
    check_input(input)
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)  # JSON's 5.0 is the integer 5
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 0 <= priority <= 9):
        raise InvalidInput("priority", f"must be an integer 0..9 (lower first), got {priority!r}")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidInput("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    if idempotency_key is not None and "\x00" in idempotency_key:
        # keys are opaque and stored verbatim; only U+0000 cannot live in PostgreSQL text
        raise InvalidInput("Idempotency-Key", "must not contain U+0000")
    # The digest covers the request as sent (not the resolved version), so a replay after a
    # newer version was stored still returns the run the key created.
    # A priority is part of the request only when given, so digests of requests without
    # one stay what they were.
    digest = sha256_hex({"input": input, "version": version}
                        | ({} if priority is None else {"priority": priority}))
    async with svc.db.transaction() as conn:
        row = await resolve(conn, tenant_id, workflow_id, version)
        workflow = await svc.definitions.get(conn, tenant_id, workflow_id, row.version)
        pins = await subflows.resolve_pins(svc, conn, tenant_id, workflow)
        run = await q.insert(conn, tenant_id=tenant_id, workflow_id=workflow_id,
                             workflow_version=row.version, input=input,
                             idempotency_key=idempotency_key, request_digest=digest,
                             rerun_of=None, created_by=created_by, timeout_ms=workflow.timeout_ms,
                             pins=pins, priority=5 if priority is None else priority)
        if run is None:
            assert idempotency_key is not None  # only the idempotency constraint can conflict
            existing = await q.by_idempotency_key(conn, tenant_id, workflow_id, idempotency_key)
            assert existing is not None
            if existing.request_digest != digest:
                raise IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was already used for workflow "
                    f"{workflow_id!r} with a different request body")
            started = StartedRun(existing, replayed=True)
        else:
            # an event-started run names its event in run.created
            # (docs/workflows.md#event-started-runs)
            run = await created(svc, conn, run, workflow,
                                {"idempotency_key": idempotency_key}
                                | ({} if started_by_event is None
                                   else {"started_by_event": dict(started_by_event)}))
            started = StartedRun(run, replayed=False)
    if not started.replayed and started.run.status is RunStatus.DENIED:
        tracing.run_ended(started.run, [])  # a trace of one span: it never ran
        raise denial(started.run)  # the denied run and its decisions are committed
    return started


async def created(svc: Services, conn: Conn, run: RunRow, workflow: WorkflowDef,
                  data: dict[str, Any]) -> RunRow:
    """A run just inserted: its steps, its run.created event, its submit gate, and the
    scheduler woken (a run a caller starts and a child run alike)."""
    await steps_q.insert_all(conn, run.tenant_id, run.run_id, step_rows(workflow))
    events = [timeline_q.Event("run.created", actor=run.created_by, data={
        "workflow_id": run.workflow_id, "version": run.workflow_version, **data})]
    run = await submit_gate(svc, conn, run, workflow, events=events)
    await timeline_q.append_many(conn, run.tenant_id, run.run_id, events)
    if run.status is RunStatus.PENDING:
        await q.wake(conn, run.tenant_id, run.run_id)
    return run


async def submit_gate(svc: Services, conn: Conn, run: RunRow, workflow: WorkflowDef, *,
                      events: list[timeline_q.Event], skip: set[str] | None = None) -> RunRow:
    """Evaluates every job step (but those in ``skip``: reused by a rerun) against the run
    input; on any deny, stores the run ``denied`` with every step ended."""
    policy = await svc.policies.active(conn, run.tenant_id)
    denials: dict[str, Evaluated] = {}
    decisions = DecisionBatch()  # one statement for every step (a fan-out has hundreds)
    for step in workflow.steps.values():
        if step.type is not StepType.JOB or step.id in (skip or ()):
            continue
        facts = facts_for(step, tenant_id=run.tenant_id, workflow_id=run.workflow_id,
                          input=run.input)
        evaluated = Evaluated(policy.snapshot_hash, policy.bundle.evaluate(facts))
        events.append(decisions.add("submit", facts, run_id=run.run_id, job_id=None,
                                    attempt=None, evaluated=evaluated))
        if evaluated.decision.verdict is Verdict.DENY:
            denials[step.id] = evaluated
    await decisions.write(conn)
    if not denials:
        return run
    # Nothing will ever run: end every step now, so a final run never has open steps.
    errors = {sid: {"type": "PolicyDenied", **e.to_doc()} for sid, e in denials.items()}
    for row in await steps_q.of_run(conn, run.tenant_id, run.run_id):
        if row.status.is_final:  # reused by a rerun
            continue
        denied = row.step_id in denials
        await steps_q.transition(conn, row,
                                 StepStatus.DENIED if denied else StepStatus.SKIPPED,
                                 error=errors.get(row.step_id))
    ended = await q.transition(conn, run, RunStatus.DENIED, error=errors)
    assert ended is not None  # we inserted the run in this transaction
    events.append(timeline_q.Event("run.denied", actor="policy",
                                   data={"stage": "submit", "denied_steps": sorted(denials)}))
    await q.mark_scheduled(conn, run.tenant_id, run.run_id)
    return ended


def denial(run: RunRow) -> PolicyDenied:
    step_id, error = sorted((run.error or {}).items())[0]
    rule = error.get("rule")
    # no rule matched: the bundle's default decided (or, without a snapshot, the default
    # of WARDEN_POLICY_DEFAULT); never "rule None"
    by = f"rule {rule!r}" if rule else "the default decision (no rule matched)"
    return PolicyDenied(
        f"run {run.run_id} denied by policy at submit: step {step_id!r}, {by}: "
        f"{error.get('reason')}",
        run_id=str(run.run_id), step_id=step_id, rule=rule, reason=error.get("reason"))


async def get_row(conn: Conn, tenant_id: str | None, run_id: UUID) -> RunRow:
    """A run of the tenant (None: any tenant, for host-side operator tools)."""
    run = (await q.get_any_tenant(conn, run_id) if tenant_id is None
           else await q.get(conn, tenant_id, run_id))
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


async def detail(svc: Services, tenant_id: str | None, run_id: UUID) -> RunDetail:
    async with svc.db.transaction() as conn:
        run = await get_row(conn, tenant_id, run_id)
        workflow = await svc.definitions.get(conn, run.tenant_id, run.workflow_id,
                                         run.workflow_version)
        by_id = {s.step_id: s for s in await steps_q.of_run(conn, run.tenant_id, run_id)}
        jobs = await jobs_q.of_run(conn, run.tenant_id, run_id)
        approvals = await approvals_q.of_run(conn, run.tenant_id, run_id)
        live = await workers_q.live_per_topic(
            conn, [j.topic for j in jobs if j.status is JobStatus.PENDING])
        as_of = await q.transaction_now(conn)
        flow = await flowview.facts(conn, run.tenant_id, run_id, workflow, by_id)
        items = await items_q.of_run(conn, run.tenant_id, run_id)
        children = await q.children_of_run(conn, run.tenant_id, run_id)
        gated = any(j.status is JobStatus.PENDING and (j.concurrency_key or j.rate_key)
                    for j in jobs)
        gates = await gates_q.waiting_of_run(conn, run.tenant_id, run_id) if gated else {}
        started_by = await event_starts_q.of_run(conn, run.tenant_id, run_id)
    return RunDetail(run, [by_id[s] for s in workflow.steps if s in by_id], jobs, approvals,
                     live, as_of, flow, items, children, gates, started_by)


@dataclass(frozen=True)
class RunFilter:
    """What `GET /workflow-runs` and `warden runs list` can filter on (None: any)."""

    status: RunStatus | None = None
    denied_by: str | None = None  # policy | approval
    workflow_id: str | None = None
    id_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    idempotency_key: str | None = None
    rerun_of: UUID | None = None  # the reruns of that run
    input_match: dict[str, Any] | None = None  # jsonb containment: input @> this

    def params(self) -> dict[str, Any]:
        low, high = (ids.prefix_range(self.id_prefix, "id_prefix") if self.id_prefix
                     else (None, None))
        return {"status": self.status, "denied_by": self.denied_by,
                "workflow_id": self.workflow_id, "id_low": low, "id_high": high,
                "created_after": self.created_after, "created_before": self.created_before,
                "idempotency_key": self.idempotency_key, "rerun_of": self.rerun_of,
                "input_match": self.input_match}


DENIED_BY = ("policy", "approval")


def input_filter(pairs: list[tuple[str, str]]) -> dict[str, Any] | None:
    """``input.a.b=v`` pairs as one containment document ({"a": {"b": v}}); a value that
    reads as JSON is that JSON (``42``, ``true``, ``"42"``), any other is a string."""
    if not pairs:
        return None
    doc: dict[str, Any] = {}
    for path, raw in pairs:
        keys = path.split(".")[1:]
        if path.split(".")[0] != "input" or not keys or not all(keys):
            raise InvalidInput(path, "an input filter is input.<field>[.<field>…]=<value>")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = doc
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise InvalidInput(path, "conflicts with another input filter")
            node = child
        if keys[-1] in node:
            raise InvalidInput(path, "given twice")
        node[keys[-1]] = value
    return doc


async def page(db: Database, tenant_id: str, *, filters: RunFilter | None = None,
               before: tuple[datetime, UUID] | None = None, limit: int = 50) -> list[RunRow]:
    """A page of runs, newest first; pass the last row's (created_at, run_id) as ``before``."""
    params = (filters or RunFilter()).params()
    async with db.connection() as conn:
        return await q.page(conn, tenant_id, filters=params, before=before,
                            limit=max(1, min(limit, 500)))


async def resolve_id(db: Database, tenant_id: str | None, value: str) -> UUID:
    """A run id from a full id or a unique prefix (as the page shows: 8 hex digits)."""
    found = ids.full(value)
    if found is not None:
        return found
    low, high = ids.prefix_range(value, "RUN_ID")
    async with db.connection() as conn:
        rows = await q.by_id_prefix(conn, tenant_id, low, high, limit=11)
    return ids.one(value, [r.run_id for r in rows], kind="run", field="RUN_ID")
