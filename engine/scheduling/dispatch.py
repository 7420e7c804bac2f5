"""The dispatch gate: how a ready step becomes work, under the policy active right now.

Every attempt of a job step is evaluated just before it becomes claimable, and the
decision is recorded in the same transaction: allow → a pending job; allow_with_constraints
→ a pending job carrying the constraints (max_attempts and timeout_ms enforced here, the
rest handed to the worker); require_approval → a blocked job and an approval bound to the
snapshot and the job hash; deny → the job and step end ``denied``.

A job dispatched under one snapshot is claimable only while that snapshot is active
(warden.claim_jobs); `reevaluate` handles the drift when it is not.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from engine.core.enums import ApprovalStatus, JobStatus, StepStatus
from engine.core.errors import Busy, InvalidInput, InvalidTransition
from engine.definitions.model import StepDef, WorkflowDef
from engine.definitions.templates import render
from engine.governance.decisions import (
    ActivePolicy,
    Evaluated,
    facts_for,
    job_hash,
    record,
)
from engine.governance.policy import Facts, Verdict
from engine.process import tracing
from engine.runs.services import Services
from engine.scheduling.gates import Gates, step_gates, with_policy
from engine.scheduling.passwrites import PassWrites
from engine.store import Conn
from engine.store import approvals as approvals_q
from engine.store import jobs as jobs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.jobs import NewJob
from engine.store.records import JobRow, RunRow, StepRow

T = TypeVar("T")
ACTOR = "scheduler"


@dataclass
class RunPass:
    """One scheduler pass over one locked run: its rows as they change, and the topics
    that got new claimable jobs (announced once, at commit)."""

    run: RunRow
    workflow: WorkflowDef
    steps: dict[str, StepRow]
    # the whole pass's deferred writes, which this run's writes join
    writes: PassWrites
    # the active policy of each tenant, read once per pass
    policies: dict[str, ActivePolicy]
    topics: set[str] = field(default_factory=set)
    # the run's events, written with the pass's at its end (the run stays locked
    # meanwhile, so their seq is still assigned in commit order)
    events: list[timeline_q.Event] = field(default_factory=list)

    async def policy(self, svc: Services, conn: Conn) -> ActivePolicy:
        tenant_id = self.run.tenant_id
        if tenant_id not in self.policies:
            self.policies[tenant_id] = await svc.policies.active(conn, tenant_id)
        return self.policies[tenant_id]

    async def event(self, conn: Conn, kind: str, step_id: str | None = None, *,
                    job_id: str | None = None, attempt: int | None = None,
                    data: dict[str, Any] | None = None) -> None:
        self.events.append(timeline_q.Event(kind, step_id, job_id, attempt, ACTOR, data or {}))


class Dispatcher:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def dispatch_job(self, conn: Conn, state: RunPass, definition: StepDef,
                           step: StepRow, available_at: datetime | None) -> StepRow:
        assert definition.topic is not None  # validated: job steps have a topic
        attempt = step.attempts + 1
        upstream = {dep: state.steps[dep].output for dep in definition.depends_on}
        try:
            job_input = self._render(state, definition)
            gates = self._gates(state, definition)
        except InvalidInput as exc:
            # a reference the definition allowed but the data lacks: retrying cannot help
            error = {"type": "InputRenderError", "message": str(exc), "field": exc.field}
            await state.event(conn, "job.failed", step.step_id, attempt=attempt,
                              data={"error": error, "retryable": False, "dispatched": False})
            return await moved(steps_q.transition(conn, step, StepStatus.FAILED, error=error))
        job_id = f"{step.run_id}:{step.step_id}@{attempt}"
        policy = await state.policy(self.svc, conn)
        facts = facts_for(definition, tenant_id=step.tenant_id,
                          workflow_id=state.run.workflow_id, input=job_input)
        evaluated = Evaluated(policy.snapshot_hash, policy.bundle.evaluate(facts))
        verdict = evaluated.decision.verdict
        gates = with_policy(gates, evaluated.decision)
        if verdict in (Verdict.ALLOW, Verdict.ALLOW_WITH_CONSTRAINTS):
            return await self._dispatch_claimable(conn, state, definition, step, facts,
                                                  evaluated, job_input, upstream, available_at,
                                                  gates)
        await record(conn, stage="dispatch", facts=facts, run_id=step.run_id, job_id=job_id,
                     attempt=attempt, evaluated=evaluated, events=state.events)
        constraints = dict(evaluated.decision.constraints)
        step = await moved(steps_q.start_attempt(conn, step))
        if verdict is not Verdict.DENY and "max_attempts" in constraints:
            step = await moved(steps_q.limit_attempts(conn, step,
                                                      int(constraints["max_attempts"])))
        status = {Verdict.DENY: JobStatus.DENIED,
                  Verdict.REQUIRE_APPROVAL: JobStatus.BLOCKED}.get(verdict, JobStatus.PENDING)
        job = await jobs_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            attempt=attempt, topic=definition.topic, status=status,
            priority=job_priority(state, definition), input=job_input, upstream=upstream,
            constraints=constraints, timeout_ms=attempt_timeout(definition, constraints),
            available_at=available_at, policy_snapshot_hash=evaluated.snapshot_hash,
            traceparent=await _traced(conn, state, job_id, step.step_id, attempt,
                                      definition.topic, verdict),
            gates=shallow_gates(gates))
        return await self._apply_verdict(conn, state, step, job, evaluated)

    async def reevaluate(self, conn: Conn, state: RunPass, job: JobRow) -> None:
        """Policy drift: the job was dispatched under another snapshot than the active one."""
        step = state.steps[job.step_id]
        definition = state.workflow.steps[job.step_id]
        facts = facts_for(definition, tenant_id=job.tenant_id,
                          workflow_id=state.run.workflow_id, input=job.input)
        evaluated = await self.svc.policies.decide(
            conn, stage="dispatch", facts=facts, run_id=job.run_id, job_id=job.job_id,
            attempt=job.attempt, policy=await state.policy(self.svc, conn),
            events=state.events)
        if job.status is JobStatus.BLOCKED:
            await self._supersede(conn, state, step, evaluated)
        if step.status is StepStatus.WAITING:
            step = await moved(steps_q.transition(conn, step, StepStatus.RUNNING))
        verdict = evaluated.decision.verdict
        constraints = dict(evaluated.decision.constraints)
        status = {Verdict.DENY: JobStatus.DENIED,
                  Verdict.REQUIRE_APPROVAL: JobStatus.BLOCKED}.get(verdict, JobStatus.PENDING)
        job = await moved(jobs_q.transition(
            conn, job, status, snapshot_hash=evaluated.snapshot_hash,
            constraints=constraints, timeout_ms=attempt_timeout(definition, constraints),
            error=denial_error(evaluated) if verdict is Verdict.DENY else None))
        if verdict is not Verdict.DENY and "max_attempts" in constraints:
            step = await moved(steps_q.limit_attempts(conn, step,
                                                      int(constraints["max_attempts"])))
        state.steps[job.step_id] = await self._apply_verdict(conn, state, step, job, evaluated)

    async def request_step_approval(self, conn: Conn, state: RunPass, definition: StepDef,
                                    step: StepRow) -> StepRow:
        """An `approval` step: bound to the active snapshot and to what its dependencies
        produced (the plan the approver is shown)."""
        upstream = {dep: state.steps[dep].output for dep in definition.depends_on}
        digest = job_hash(tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
                          topic=None, input=state.run.input, upstream=upstream, constraints={})
        policy = await state.policy(self.svc, conn)
        await self._request_approval(conn, state, step, kind="step", job_id=None,
                                     digest=digest, snapshot_hash=policy.snapshot_hash,
                                     expires_in_ms=definition.expires_in_ms)
        return await moved(steps_q.transition(conn, step, StepStatus.WAITING))

    # ------------------------------------------------------------ internals

    async def _dispatch_claimable(self, conn: Conn, state: RunPass, definition: StepDef,
                                  step: StepRow, facts: Facts, evaluated: Evaluated,
                                  job_input: Any, upstream: dict[str, Any],
                                  available_at: datetime | None, gates: Gates) -> StepRow:
        """The common case, allowed: decision, attempt count and job are deferred to the
        pass's set-based writes (engine.scheduling.passwrites)."""
        assert definition.topic is not None  # validated: job steps have a topic
        writes = state.writes
        attempt = step.attempts + 1
        job_id = f"{step.run_id}:{step.step_id}@{attempt}"
        constraints = dict(evaluated.decision.constraints)
        state.events.append(writes.decisions.add("dispatch", facts, run_id=step.run_id,
                                                  job_id=job_id, attempt=attempt,
                                                  evaluated=evaluated))
        max_attempts = int(constraints["max_attempts"]) if "max_attempts" in constraints \
            else None
        writes.attempts.append(steps_q.AttemptStart(step.tenant_id, step.run_id, step.step_id,
                                                    step.attempts, max_attempts))
        writes.jobs.append(NewJob(
            step.tenant_id, step.run_id, step.step_id, attempt, definition.topic,
            job_priority(state, definition), job_input, upstream, constraints,
            attempt_timeout(definition, constraints), available_at, evaluated.snapshot_hash,
            await _traced(conn, state, job_id, step.step_id, attempt, definition.topic,
                          evaluated.decision.verdict), **shallow_gates(gates)))
        now = await writes.now(conn)
        await state.event(conn, "job.dispatched", step.step_id, job_id=job_id, attempt=attempt,
                          data={"topic": definition.topic,
                                "available_at": max(now, available_at or now).isoformat(),
                                "constraints": constraints})
        state.topics.add(definition.topic)
        return replace(step, status=StepStatus.RUNNING, attempts=attempt, retry_at=None,
                       max_attempts=max_attempts or step.max_attempts,
                       started_at=step.started_at or now)

    def _gates(self, state: RunPass, definition: StepDef) -> Gates:
        return gates_of(state, definition)

    def _render(self, state: RunPass, definition: StepDef) -> Any:
        if definition.input is None:
            return state.run.input
        outputs = {sid: s.output for sid, s in state.steps.items()
                   if s.status is StepStatus.SUCCEEDED}
        return render(dict(definition.input), run_input=state.run.input, step_outputs=outputs)

    async def _apply_verdict(self, conn: Conn, state: RunPass, step: StepRow, job: JobRow,
                             evaluated: Evaluated) -> StepRow:
        verdict = evaluated.decision.verdict
        if verdict is Verdict.DENY:
            return await moved(steps_q.transition(conn, step, StepStatus.DENIED,
                                                  error=denial_error(evaluated)))
        if verdict is Verdict.REQUIRE_APPROVAL:
            digest = job_hash(tenant_id=job.tenant_id, run_id=job.run_id, step_id=job.step_id,
                              topic=job.topic, input=job.input, upstream=job.upstream,
                              constraints=job.constraints)
            expires = evaluated.decision.constraints.get("approval_expires_in_ms")
            await self._request_approval(conn, state, step, kind="policy", job_id=job.job_id,
                                         digest=digest, snapshot_hash=evaluated.snapshot_hash,
                                         expires_in_ms=int(expires) if expires else None)
            return await moved(steps_q.transition(conn, step, StepStatus.WAITING))
        await state.event(conn, "job.dispatched", step.step_id, job_id=job.job_id,
                          attempt=job.attempt,
                          data={"topic": job.topic, "available_at": job.available_at.isoformat(),
                                "constraints": job.constraints})
        state.topics.add(job.topic)
        return step

    async def _request_approval(self, conn: Conn, state: RunPass, step: StepRow, *, kind: str,
                                job_id: str | None, digest: str, snapshot_hash: str | None,
                                expires_in_ms: int | None) -> None:
        approval = await approvals_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            job_id=job_id, kind=kind, policy_snapshot_hash=snapshot_hash, job_hash=digest,
            requested_by=state.run.created_by,
            expires_in_ms=expires_in_ms or self.svc.approval_expires_ms)
        await state.event(conn, "approval.requested", step.step_id, job_id=job_id, data={
            "approval_id": str(approval.approval_id), "kind": kind, "job_hash": digest,
            "policy_snapshot_hash": snapshot_hash, "barred": approval.barred,
            "expires_at": approval.expires_at.isoformat() if approval.expires_at else None})

    async def _supersede(self, conn: Conn, state: RunPass, step: StepRow,
                         evaluated: Evaluated) -> None:
        old = await approvals_q.lock_pending_of_step(conn, step.tenant_id, step.run_id,
                                                     step.step_id)
        if old is None:
            raise Busy(f"approval of {step.step_id} is being decided")
        reason = (f"policy changed to snapshot {evaluated.snapshot_hash}: "
                  f"{evaluated.decision.verdict.value}")
        await moved(approvals_q.close(conn, old, ApprovalStatus.SUPERSEDED, reason))
        await state.event(conn, "approval.superseded", step.step_id, job_id=old.job_id, data={
            "approval_id": str(old.approval_id), "reason": reason,
            "policy_snapshot_hash": evaluated.snapshot_hash})


async def _traced(conn: Conn, state: RunPass, job_id: str, step_id: str, attempt: int,
                  topic: str, verdict: Verdict) -> str | None:
    """The job's traceparent, its dispatch span noted for after the commit; None (and
    nothing noted) while traces are off."""
    if not tracing.enabled():
        return None
    await state.writes.now(conn)  # the dispatch span starts at the pass's now()
    state.writes.dispatched.append(tracing.Dispatched(state.run, job_id, step_id, attempt,
                                                      topic, verdict.value))
    return tracing.traceparent(state.run.run_id, job_id)


def gates_of(state: RunPass, definition: StepDef) -> Gates:
    """The step's own concurrency and rate gates, rendered (InvalidInput, field ``key``,
    when a key cannot render); a decision's limits are applied by ``with_policy``."""
    if definition.concurrency is None and definition.rate_limit is None:
        return Gates()
    outputs = {sid: s.output for sid, s in state.steps.items()
               if s.status is StepStatus.SUCCEEDED}
    return step_gates(definition, run_input=state.run.input, step_outputs=outputs)


def job_priority(state: RunPass, definition: StepDef) -> int:
    """Run priority first, step priority within it (docs/workflows.md#priority): both
    0..9, lower first, so a job's priority is 0..99."""
    return state.run.priority * 10 + definition.priority


def shallow_gates(gates: Gates) -> dict[str, Any]:
    return {"concurrency_key": gates.concurrency_key,
            "concurrency_limit": gates.concurrency_limit, "rate_key": gates.rate_key,
            "rate_limit": gates.rate_limit, "rate_per_ms": gates.rate_per_ms}


def attempt_timeout(definition: StepDef, constraints: dict[str, Any]) -> int | None:
    """A policy's timeout_ms can only tighten the definition's, never loosen it."""
    limits = [t for t in (definition.timeout_ms, constraints.get("timeout_ms")) if t]
    return min(int(t) for t in limits) if limits else None


def denial_error(evaluated: Evaluated) -> dict[str, Any]:
    return {"type": "PolicyDenied", **evaluated.to_doc()}


async def moved(pending: Awaitable[T | None]) -> T:
    """Awaits a guarded transition; no row back means someone else moved the object,
    which cannot happen while we hold the run lock — so it is a bug worth surfacing."""
    row = await pending
    if row is None:
        raise InvalidTransition("a step, job or approval changed under the scheduler's run lock")
    return row
