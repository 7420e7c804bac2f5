"""Starting runs (idempotently) and reading them with their steps."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.core import ids
from engine.core.canonical import require_storable, sha256_hex
from engine.core.enums import JobStatus, RunStatus, StepStatus, StepType
from engine.core.errors import (
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PolicyDenied,
    WardenError,
)
from engine.definitions.model import WorkflowDef
from engine.definitions.workflows import resolve
from engine.governance.decisions import ActivePolicy, DecisionBatch, Evaluated, facts_for
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
from engine.store.records import ApprovalRow, ItemRow, JobRow, RunKey, RunRow, StepRow

if TYPE_CHECKING:
    from engine.runs.services import Services, StartDispatched

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


@dataclass(frozen=True)
class StartItem:
    """One run to start: what `start` takes, per run of a batch."""

    input: Any
    idempotency_key: str | None = None
    version: str | None = None
    priority: int | None = None  # 0..9, lower first (docs/workflows.md#priority)
    # the event that started the run (engine/runs/event_starts.py), named in run.created
    started_by_event: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ItemResult:
    """What became of one item of a batch start. ``started`` is the run the item created
    or replayed (also a run stored ``denied`` at submit); ``error`` says why nothing was
    started, or (PolicyDenied, beside ``started``) that the new run was denied."""

    index: int
    started: StartedRun | None = None
    error: WardenError | None = None


MAX_BATCH = 1000
# A start of up to this many runs dispatches their first steps in its own transaction
# (Services.start_dispatch); a bigger batch leaves them flagged for the scheduler, which
# takes them 50 per pass while the caller goes on. Measured on 1,000-run batches: the pass
# in the start's transaction made the call 2.5-3.5x slower (HTTP: ~2,000 -> ~550 runs/s),
# for no gain in a batch's latency (its last run waits for the whole transaction anyway).
DISPATCH_AT_START_MAX = 50


async def start(svc: Services, *, tenant_id: str, workflow_id: str, input: Any,
                created_by: str, idempotency_key: str | None = None,
                version: str | None = None, priority: int | None = None,
                started_by_event: Mapping[str, Any] | None = None) -> StartedRun:
    """Creates a run pinned to one workflow version, or replays the run an idempotency key
    already created. The unique constraint runs_idempotency arbitrates concurrent starts.

    The submit gate evaluates every job step against the run input; on any deny the run
    is stored ``denied`` with its decisions and PolicyDenied is raised after the commit.
    """
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)  # JSON's 5.0 is the integer 5
    item = StartItem(input, idempotency_key, version, priority, started_by_event)
    planned = await _start_planned(svc, tenant_id=tenant_id, workflow_id=workflow_id,
                                   created_by=created_by, item=item)
    if planned is not None:
        return planned
    [result] = await start_many(svc, tenant_id=tenant_id, workflow_id=workflow_id,
                                created_by=created_by, item_fields=False, items=[item])
    if result.error is not None:
        raise result.error
    assert result.started is not None
    return result.started


async def _start_planned(svc: Services, *, tenant_id: str, workflow_id: str, created_by: str,
                         item: StartItem) -> StartedRun | None:
    """The start in one call where a start plan covers it (warden.start_planned_run,
    docs/design.md#starts-in-one-call): one statement, not sixteen round trips. None: the call
    wrote nothing, and the item starts the long way (which also raises its errors).

    Only where the long way would dispatch at start too (``svc.start_dispatch``) and
    traces are off (a job dispatched in SQL carries no traceparent)."""
    misses = svc.start_plan_misses
    if svc.start_dispatch is None or tracing.enabled() \
            or misses.recent(tenant_id, workflow_id, item.version):
        return None
    try:
        _check_item(item)
    except InvalidInput:
        return None  # start_many names the field
    sent = q.NewRun(ids.new_run_id(), "", item.input, item.idempotency_key, _digest(item), None,
                    5 if item.priority is None else int(item.priority))
    async with svc.db.connection() as conn:
        row = await q.start_planned(conn, tenant_id=tenant_id, workflow_id=workflow_id,
                                    version=item.version, run=sent, created_by=created_by,
                                    started_by_event=item.started_by_event)
    if row is None:
        misses.missed(tenant_id, workflow_id, item.version)
        return None
    if row.run_id == sent.run_id:
        return StartedRun(row, replayed=False)
    # the key started another run: the same request is a replay, another one a conflict
    if row.request_digest != sent.request_digest:
        raise _conflict(item.idempotency_key, workflow_id)
    return StartedRun(row, replayed=True)


async def start_many(svc: Services, *, tenant_id: str, workflow_id: str, created_by: str,
                     items: Sequence[StartItem], item_fields: bool = True) -> list[ItemResult]:
    """Starts up to MAX_BATCH runs of one workflow in one transaction, each item on its own:
    its own idempotency key and request digest, its own submit decisions, and its own
    result (one result per item, in order). An item that cannot start (bad input, a key
    used with another body, an unknown version) starts nothing and spoils no other item;
    only a database failure fails the whole call, which then started nothing.

    Set-based: one statement inserts the runs, one their steps, one the submit decisions
    and one the timeline events of every run (per run in order, gapless). With
    ``svc.start_dispatch`` the first steps of up to DISPATCH_AT_START_MAX new runs are
    dispatched in the same transaction.
    ``item_fields=False``: an item's InvalidInput names the field as `start` does
    (``input.x``, not ``items[3].input.x``), for a caller that numbers items its own way.
    """
    if not 1 <= len(items) <= MAX_BATCH:
        raise InvalidInput("items", f"must hold 1 to {MAX_BATCH} runs, not {len(items)}")
    results = [ItemResult(i) for i in range(len(items))]
    digests: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            _check_item(item)
        except InvalidInput as exc:
            results[i] = ItemResult(i, error=exc if not item_fields else InvalidInput(
                f"items[{i}].{exc.field}", str(exc).removeprefix(f"{exc.field}: ")))
            continue
        digests[i] = _digest(item)
    denied: list[RunRow] = []
    dispatched: StartDispatched | None = None
    if digests:
        async with svc.db.transaction(generic_plans=True) as conn:
            dispatched = await _start_in(svc, conn, tenant_id, workflow_id, created_by,
                                         items, digests, results, denied)
    if dispatched is not None:
        dispatched.after_commit()
    for run in denied:
        tracing.run_ended(run, [])  # a trace of one span: it never ran
    return results


def _digest(item: StartItem) -> str:
    """The item's request digest. It covers the request as sent (not the resolved
    version), so a replay after a newer version was stored still returns the run the key
    created. A priority is part of the request only when given, so digests of requests
    without one stay what they were."""
    return sha256_hex({"input": item.input, "version": item.version}
                      | ({} if item.priority is None else {"priority": item.priority}))


def _conflict(key: str | None, workflow_id: str) -> IdempotencyConflict:
    return IdempotencyConflict(f"Idempotency-Key {key!r} was already used for workflow "
                               f"{workflow_id!r} with a different request body")


def _check_item(item: StartItem) -> None:
    check_input(item.input)
    priority = item.priority
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 0 <= priority <= 9):
        raise InvalidInput("priority", f"must be an integer 0..9 (lower first), got {priority!r}")
    key = item.idempotency_key
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidInput("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    if key is not None and "\x00" in key:
        # keys are opaque and stored verbatim; only U+0000 cannot live in PostgreSQL text
        raise InvalidInput("Idempotency-Key", "must not contain U+0000")


async def _insert_runs(svc: Services, conn: Conn, tenant_id: str, workflow_id: str,
                       created_by: str, items: Sequence[StartItem], digests: dict[int, str],
                       results: list[ItemResult]) -> list[tuple[int, RunRow, WorkflowDef]]:
    """Inserts the runs of the items that have none yet (one statement); the others get
    their result here (a replay, a conflict, an unknown version). Returns the new runs."""
    # no workflow of that id at all: the whole call is not found (nothing is written yet),
    # as the path of the batch's URL names it; an unknown version is one item's problem
    newest = await resolve(conn, tenant_id, workflow_id, None)
    versions: dict[str | None, tuple[str, WorkflowDef] | NotFound] = {
        None: (newest.version, await svc.definitions.get(conn, tenant_id, workflow_id,
                                                         newest.version))}
    for version in dict.fromkeys(items[i].version for i in digests
                                 if items[i].version is not None):
        try:
            row = await resolve(conn, tenant_id, workflow_id, version)
            versions[version] = (row.version, await svc.definitions.get(
                conn, tenant_id, workflow_id, row.version))
        except NotFound as exc:
            versions[version] = exc
    # the child versions of each version's workflow steps, resolved once per version
    pins: dict[str, Any] = {}
    for found in versions.values():
        if not isinstance(found, NotFound) and found[0] not in pins:
            pins[found[0]] = await subflows.resolve_pins(svc, conn, tenant_id, found[1])
    planned: dict[UUID, tuple[int, WorkflowDef]] = {}
    new: list[q.NewRun] = []
    for i in digests:
        found = versions[items[i].version]
        if isinstance(found, NotFound):
            results[i] = ItemResult(i, error=found)
            continue
        run_id = ids.new_run_id()
        planned[run_id] = (i, found[1])
        priority = items[i].priority
        new.append(q.NewRun(run_id, found[0], items[i].input, items[i].idempotency_key,
                            digests[i], found[1].timeout_ms,
                            5 if priority is None else int(priority), pins[found[0]]))
    inserted = {row.run_id: row for row in await q.insert_many(
        conn, tenant_id=tenant_id, workflow_id=workflow_id, created_by=created_by, runs=new)}
    # a key already taken (by an earlier run, or an earlier item of this batch): a replay
    # when the body is the same, a conflict when it is not
    existing = {row.idempotency_key: row for row in await q.by_idempotency_keys(
        conn, tenant_id, workflow_id,
        [r.idempotency_key for r in new if r.run_id not in inserted and r.idempotency_key])}
    runs: list[tuple[int, RunRow, WorkflowDef]] = []
    for r in new:
        i, workflow = planned[r.run_id]
        made = inserted.get(r.run_id)
        if made is not None:
            runs.append((i, made, workflow))
            results[i] = ItemResult(i, StartedRun(made, replayed=False))
            continue
        assert r.idempotency_key is not None  # only the idempotency constraint can conflict
        before = existing[r.idempotency_key]
        if before.request_digest != r.request_digest:
            results[i] = ItemResult(i, error=_conflict(r.idempotency_key, workflow_id))
        else:
            results[i] = ItemResult(i, StartedRun(before, replayed=True))
    return runs


async def _start_in(svc: Services, conn: Conn, tenant_id: str, workflow_id: str,
                    created_by: str, items: Sequence[StartItem], digests: dict[int, str],
                    results: list[ItemResult], denied: list[RunRow]) -> StartDispatched | None:
    """The transaction of start_many: fills ``results`` (and ``denied``, the new runs
    the submit gate denied)."""
    runs = await _insert_runs(svc, conn, tenant_id, workflow_id, created_by, items, digests,
                              results)
    if not runs:
        return None
    by_version: dict[str, tuple[WorkflowDef, list[UUID]]] = {}
    for _, row, workflow in runs:
        by_version.setdefault(row.workflow_version, (workflow, []))[1].append(row.run_id)
    steps: list[StepRow] = []
    for workflow, run_ids in by_version.values():
        steps += await steps_q.insert_for_runs(conn, tenant_id, run_ids, step_rows(workflow))
    policy = await svc.policies.active(conn, tenant_id)
    decisions = DecisionBatch()  # one statement for every step of every run
    events: dict[RunKey, list[timeline_q.Event]] = {}
    denials: dict[UUID, dict[str, Evaluated]] = {}
    for i, row, workflow in runs:
        # an event-started run names its event in run.created
        # (docs/workflows.md#event-started-runs)
        by_event = items[i].started_by_event
        run_events = events[(tenant_id, row.run_id)] = [timeline_q.Event(
            "run.created", actor=created_by, data={
                "workflow_id": workflow_id, "version": row.workflow_version,
                "idempotency_key": row.idempotency_key}
            | ({} if by_event is None else {"started_by_event": dict(by_event)}))]
        found = _judge(policy, row, workflow, decisions, run_events, skip=None)
        if found:
            denials[row.run_id] = found
    await decisions.write(conn)
    pending: list[tuple[int, RunRow]] = []
    for i, row, _ in runs:
        if row.run_id not in denials:
            pending.append((i, row))
            continue
        ended = await _deny(conn, row, denials[row.run_id], events[(tenant_id, row.run_id)])
        results[i] = ItemResult(i, StartedRun(ended, replayed=False), denial(ended))
        denied.append(ended)
    dispatched = None
    if pending and svc.start_dispatch is not None and len(pending) <= DISPATCH_AT_START_MAX:
        # ends each pending run's scheduler flag with its first steps dispatched, and
        # appends every run's events (the denied ones' too) in its one statement
        dispatched = await svc.start_dispatch(conn, [row for _, row in pending], events,
                                              steps=steps, policy=policy)
    if dispatched is None:
        await timeline_q.append_for_runs(conn, events)
        if pending:  # inserted already flagged needs_scheduling: only the wake-up is left
            await q.notify_schedulers(conn)
        return None
    for i, row in pending:
        now = dispatched.runs.get((tenant_id, row.run_id), row)
        results[i] = ItemResult(i, StartedRun(now, replayed=False))
    return dispatched


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
    decisions = DecisionBatch()  # one statement for every step (a fan-out has hundreds)
    denials = _judge(policy, run, workflow, decisions, events, skip=skip)
    await decisions.write(conn)
    if not denials:
        return run
    return await _deny(conn, run, denials, events)


def _judge(policy: ActivePolicy, run: RunRow, workflow: WorkflowDef, decisions: DecisionBatch,
           events: list[timeline_q.Event], *, skip: set[str] | None) -> dict[str, Evaluated]:
    """The submit decisions of a run's job steps, added to ``decisions`` (their events to
    ``events``); returns the denied steps."""
    denials: dict[str, Evaluated] = {}
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
    return denials


async def _deny(conn: Conn, run: RunRow, denials: dict[str, Evaluated],
                events: list[timeline_q.Event]) -> RunRow:
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
