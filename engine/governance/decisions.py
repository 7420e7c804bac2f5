"""Policy snapshots, their activation, and the record every gate decision leaves.

The gates themselves live where the work is gated — `engine.runs.lifecycle` (submit) and
`engine.scheduling.scheduler` (dispatch) — and call `Policies.decide`, which evaluates under the
tenant's active snapshot and writes the decision row and its `policy.decision` timeline
event in the caller's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from engine.core.canonical import sha256_hex
from engine.core.errors import NotFound
from engine.definitions.model import StepDef
from engine.governance.policy import Bundle, Decision, Facts, Verdict, default_bundle, parse_bundle
from engine.store import Conn, Database
from engine.store import policy as q
from engine.store import timeline as timeline_q
from engine.store.records import PolicyActivationRow, PolicyDecisionRow, PolicySnapshotRow

EventSink = list[timeline_q.Event]

log = logging.getLogger(__name__)

# How long an activation waits for the transactions that read the old snapshot, and how
# often it looks. Engine transactions are cut off after a minute idle
# (engine/store/connection.py); a SQL worker's could be longer, and its job is then left
# to the next activation or to the operator (docs/design.md#policy-decisions-are-recorded).
READERS_WAIT_S = 60.0
READERS_POLL_S = 0.01


@dataclass(frozen=True)
class ActivePolicy:
    snapshot_hash: str | None  # None: no snapshot active, the configured default decides
    bundle: Bundle


@dataclass(frozen=True)
class Evaluated:
    snapshot_hash: str | None
    decision: Decision

    def to_doc(self) -> dict[str, Any]:
        return {**self.decision.to_doc(), "snapshot_hash": self.snapshot_hash}


@dataclass(frozen=True)
class StoredSnapshot:
    row: PolicySnapshotRow
    created: bool  # False: the same bundle (same hash) was stored before


class Policies:
    """The tenant's active policy, with parsed bundles cached by hash (they never change)."""

    def __init__(self, default: Verdict, *, size: int = 256) -> None:
        self.default = default_bundle(default)
        self._size = size
        self._bundles: OrderedDict[tuple[str, str], Bundle] = OrderedDict()

    async def active(self, conn: Conn, tenant_id: str) -> ActivePolicy:
        pointer = await q.get_active(conn, tenant_id)
        if pointer is None:
            return ActivePolicy(None, self.default)
        return ActivePolicy(pointer.snapshot_hash,
                            await self.bundle(conn, tenant_id, pointer.snapshot_hash))

    async def bundle(self, conn: Conn, tenant_id: str, snapshot_hash: str) -> Bundle:
        key = (tenant_id, snapshot_hash)
        found = self._bundles.get(key)
        if found is None:
            row = await q.get_snapshot(conn, tenant_id, snapshot_hash)
            if row is None:
                raise NotFound(f"policy snapshot {snapshot_hash} not found")
            found = Bundle.from_doc(row.bundle)
            self._bundles[key] = found
            if len(self._bundles) > self._size:
                self._bundles.popitem(last=False)
        return found

    async def evaluate(self, conn: Conn, tenant_id: str, facts: Facts) -> Evaluated:
        """A decision under the active snapshot, without recording anything."""
        policy = await self.active(conn, tenant_id)
        return Evaluated(policy.snapshot_hash, policy.bundle.evaluate(facts))

    async def decide(self, conn: Conn, *, stage: str, facts: Facts, run_id: UUID,
                     job_id: str | None = None, attempt: int | None = None,
                     policy: ActivePolicy | None = None,
                     events: EventSink | None = None) -> Evaluated:
        """Evaluates and records the decision (row + timeline event) in ``conn``'s transaction."""
        policy = policy or await self.active(conn, facts.tenant_id)
        evaluated = Evaluated(policy.snapshot_hash, policy.bundle.evaluate(facts))
        await record(conn, stage=stage, facts=facts, run_id=run_id, job_id=job_id,
                     attempt=attempt, evaluated=evaluated, events=events)
        return evaluated


async def record(conn: Conn, *, stage: str, facts: Facts, run_id: UUID, job_id: str | None,
                 attempt: int | None, evaluated: Evaluated,
                 events: EventSink | None = None) -> PolicyDecisionRow:
    """The decision row, and its policy.decision event: appended now, or handed to
    ``events`` when the caller batches a transaction's events (keeping their order)."""
    decision = evaluated.decision
    row = await q.insert_decision(
        conn, tenant_id=facts.tenant_id, stage=stage, snapshot_hash=evaluated.snapshot_hash,
        rule=decision.rule, decision=decision.verdict.value, reason=decision.reason,
        constraints=dict(decision.constraints), run_id=run_id, step_id=facts.step_id,
        job_id=job_id)
    event = decision_event(stage, facts, job_id=job_id, attempt=attempt, evaluated=evaluated,
                           decision_id=row.decision_id)
    if events is not None:
        events.append(event)
    else:
        await timeline_q.append_many(conn, facts.tenant_id, run_id, [event])
    return row


@dataclass
class DecisionBatch:
    """Decisions recorded together: the rows in one statement at `write`, each one's
    policy.decision event handed out at `add` (so the caller keeps its place in the run's
    event order) and completed with the row's id once the row exists."""

    rows: list[q.NewDecision] = field(default_factory=list)
    _events: dict[q.DecisionKey, dict[str, Any]] = field(default_factory=dict)

    def add(self, stage: str, facts: Facts, *, run_id: UUID, job_id: str | None,
            attempt: int | None, evaluated: Evaluated) -> timeline_q.Event:
        decision = evaluated.decision
        self.rows.append(q.NewDecision(
            facts.tenant_id, stage, evaluated.snapshot_hash, decision.rule,
            decision.verdict.value, decision.reason, dict(decision.constraints), run_id,
            facts.step_id, job_id))
        event = decision_event(stage, facts, job_id=job_id, attempt=attempt,
                               evaluated=evaluated, decision_id=None)
        self._events[(run_id, facts.step_id, job_id)] = event.data
        return event

    async def write(self, conn: Conn) -> None:
        ids = await q.insert_decisions(conn, self.rows)
        for key, data in self._events.items():
            data["decision_id"] = ids[key]


def decision_event(stage: str, facts: Facts, *, job_id: str | None, attempt: int | None,
                   evaluated: Evaluated, decision_id: int | None) -> timeline_q.Event:
    """The policy.decision event of a decision (a batched writer fills decision_id in
    once the row is inserted)."""
    return timeline_q.Event("policy.decision", step_id=facts.step_id, job_id=job_id,
                            attempt=attempt, actor="policy",
                            data={"stage": stage, **evaluated.to_doc(),
                                  "decision_id": decision_id})


def facts_for(step: StepDef, *, tenant_id: str, workflow_id: str, input: Any) -> Facts:
    assert step.topic is not None  # only job steps are gated
    return Facts(tenant_id=tenant_id, workflow_id=workflow_id, step_id=step.id,
                 topic=step.topic, risk_tags=tuple(step.meta.risk_tags),
                 capability=step.meta.capability, labels=dict(step.meta.labels), input=input)


def job_hash(*, tenant_id: str, run_id: UUID, step_id: str, topic: str | None, input: Any,
             upstream: Any, constraints: Any) -> str:
    """sha256 of the canonical job: exactly what an approver approves
    (docs/design.md#approvals-are-bound-to-what-runs)."""
    return sha256_hex({"tenant_id": tenant_id, "run_id": str(run_id), "step_id": step_id,
                       "topic": topic, "input": input, "upstream": upstream,
                       "constraints": constraints})


async def store_bundle(db: Database, *, tenant_id: str, source: str | bytes,
                       media_type: str | None, created_by: str) -> StoredSnapshot:
    bundle = parse_bundle(source, media_type=media_type)
    text = source.decode("utf-8") if isinstance(source, bytes) else source
    async with db.transaction() as conn:
        row = await q.insert_snapshot(conn, tenant_id=tenant_id,
                                      snapshot_hash=bundle.snapshot_hash,
                                      bundle=bundle.to_doc(), source=text, created_by=created_by)
        if row is not None:
            return StoredSnapshot(row, created=True)
        existing = await q.get_snapshot(conn, tenant_id, bundle.snapshot_hash)
    assert existing is not None  # the insert conflicted on exactly this key
    return StoredSnapshot(existing, created=False)


async def activate(db: Database, *, tenant_id: str, snapshot_hash: str,
                   activated_by: str) -> PolicyActivationRow:
    """Makes a stored snapshot the tenant's active one, records who and what it replaced,
    and wakes the scheduler for every run with an unclaimed job (drift re-evaluation).

    Then waits out the transactions that were dispatching under the old snapshot when it
    committed, and wakes the scheduler again for the runs they gave unclaimed jobs: a job
    written under the old snapshot after the first flagging would otherwise wait forever
    (claims skip it, and nothing would judge it again).
    docs/design.md#policy-decisions-are-recorded"""
    async with db.transaction() as conn:
        if await q.get_snapshot(conn, tenant_id, snapshot_hash) is None:
            raise NotFound(f"policy snapshot {snapshot_hash} not found for tenant {tenant_id}")
        previous = await q.lock_active(conn, tenant_id)
        await q.set_active(conn, tenant_id=tenant_id, snapshot_hash=snapshot_hash,
                           activated_by=activated_by)
        activation = await q.insert_activation(
            conn, tenant_id=tenant_id, snapshot_hash=snapshot_hash,
            previous_hash=previous.snapshot_hash if previous else None,
            activated_by=activated_by)
        await q.flag_drifted_runs(conn, tenant_id)
    async with db.connection() as conn:
        readers = await q.active_readers(conn)
        deadline = time.monotonic() + READERS_WAIT_S
        while readers and await q.readers_open(conn, readers):
            if time.monotonic() >= deadline:
                log.warning("policy activation for tenant %s: transactions that read the "
                            "old snapshot are still open after %.0f s; flagging without "
                            "them", tenant_id, READERS_WAIT_S)
                break
            await asyncio.sleep(READERS_POLL_S)
    async with db.transaction() as conn:
        await q.flag_drifted_runs(conn, tenant_id)
    return activation


async def snapshots(db: Database, tenant_id: str, limit: int = 100) -> list[PolicySnapshotRow]:
    async with db.connection() as conn:
        return await q.list_snapshots(conn, tenant_id, max(1, min(limit, 1000)))


async def active_pointer(db: Database, tenant_id: str) -> str | None:
    async with db.connection() as conn:
        row = await q.get_active(conn, tenant_id)
    return row.snapshot_hash if row else None


async def decisions_of_job(db: Database, tenant_id: str, job_id: str) -> list[PolicyDecisionRow]:
    async with db.connection() as conn:
        return await q.decisions_of_job(conn, tenant_id, job_id)


async def decisions_of_run(db: Database, tenant_id: str, run_id: UUID) -> list[PolicyDecisionRow]:
    async with db.connection() as conn:
        return await q.decisions_of_run(conn, tenant_id, run_id)

