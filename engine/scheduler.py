"""The scheduler: moves runs along their DAG.

Each pass locks a batch of runs flagged ``needs_scheduling`` (SKIP LOCKED, so any number
of `warden serve` processes share the work and none advances a run twice), asks
`engine.dag` what to do, applies it — jobs, approvals, notifications, skips, the run's own
status — with every change's timeline event in the same transaction, and clears the flag.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from engine import dag
from engine.definitions import StepDef, WorkflowDef
from engine.enums import JobStatus, RunStatus, StepStatus, StepType
from engine.errors import InvalidInput, InvalidTransition, WardenError
from engine.store import Conn, Database
from engine.store import approvals as approvals_q
from engine.store import jobs as jobs_q
from engine.store import notifications as notifications_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import RunRow, StepRow
from engine.templates import render
from engine.workflows import DefinitionCache

log = logging.getLogger(__name__)

ACTOR = "scheduler"
T = TypeVar("T")


@dataclass
class _Pass:
    """The mutable state of one pass over one run."""

    run: RunRow
    workflow: WorkflowDef
    steps: dict[str, StepRow]
    topics: set[str] = field(default_factory=set)

    def states(self) -> dict[str, dag.StepState]:
        return {sid: dag.StepState(s.status, s.attempts, s.retry_at)
                for sid, s in self.steps.items()}


class Scheduler:
    def __init__(self, db: Database, definitions: DefinitionCache, *,
                 approval_expires_ms: int, batch_size: int = 50) -> None:
        self.db = db
        self.definitions = definitions
        self.approval_expires_ms = approval_expires_ms
        self.batch_size = batch_size

    async def run_once(self) -> int:
        """One pass over up to ``batch_size`` runs; returns how many were taken."""
        async with self.db.transaction() as conn:
            runs = await runs_q.lock_for_scheduling(conn, self.batch_size)
            topics: set[str] = set()
            for run in runs:
                try:
                    # a savepoint per run: one run that cannot advance never blocks the rest
                    async with conn.transaction():
                        topics |= await self._advance(conn, run)
                except WardenError:
                    log.exception("run %s could not advance; it stays flagged", run.run_id,
                                  extra={"run_id": str(run.run_id)})
            await jobs_q.announce(conn, topics)
        return len(runs)

    async def _advance(self, conn: Conn, run: RunRow) -> set[str]:
        if run.status.is_final:
            await runs_q.mark_scheduled(conn, run.tenant_id, run.run_id)
            return set()
        workflow = await self.definitions.get(conn, run.tenant_id, run.workflow_id,
                                              run.workflow_version)
        rows = await steps_q.of_run(conn, run.tenant_id, run.run_id)
        state = _Pass(run, workflow, {s.step_id: s for s in rows})
        if run.status is RunStatus.PENDING:  # so run.started precedes the first step event
            state.run = await _moved(runs_q.transition(conn, run, RunStatus.RUNNING))
            await self._event(conn, state, "run.started")
        # every action moves one step forward for good, so this bound is never reached by
        # a healthy run; it only stops a bug from looping inside a held transaction
        for _ in range(3 * len(workflow.steps) + 1):
            action = dag.next_action(workflow, state.states())
            if action is None:
                break
            state.steps[action.step_id] = await self._apply(conn, state, action)
        await self._settle(conn, state, dag.run_status(state.states()))
        await runs_q.mark_scheduled(conn, run.tenant_id, run.run_id)
        return state.topics

    async def _apply(self, conn: Conn, state: _Pass, action: dag.Action) -> StepRow:
        step = state.steps[action.step_id]
        definition = state.workflow.steps[action.step_id]
        if isinstance(action, dag.Skip):
            await self._event(conn, state, "step.skipped", step.step_id,
                              data={"because": action.because})
            return await _moved(steps_q.transition(conn, step, StepStatus.SKIPPED))
        if isinstance(action, dag.Retry):
            return await self._dispatch_job(conn, state, definition, step, action.available_at)
        await self._event(conn, state, "step.ready", step.step_id)
        if definition.type is StepType.JOB:
            return await self._dispatch_job(conn, state, definition, step, None)
        if definition.type is StepType.APPROVAL:
            return await self._request_approval(conn, state, definition, step)
        return await self._notify(conn, state, definition, step)

    async def _dispatch_job(self, conn: Conn, state: _Pass, definition: StepDef, step: StepRow,
                            available_at: datetime | None) -> StepRow:
        assert definition.topic is not None  # validated: job steps have a topic
        attempt = step.attempts + 1
        upstream = {dep: state.steps[dep].output for dep in definition.depends_on}
        outputs = {sid: s.output for sid, s in state.steps.items()
                   if s.status is StepStatus.SUCCEEDED}
        try:
            job_input = (state.run.input if definition.input is None else
                         render(dict(definition.input), run_input=state.run.input,
                                step_outputs=outputs))
        except InvalidInput as exc:
            # a reference the definition allowed but the data lacks: retrying cannot help
            error = {"type": "InputRenderError", "message": str(exc), "field": exc.field}
            await self._event(conn, state, "job.failed", step.step_id, attempt=attempt,
                              data={"error": error, "retryable": False, "dispatched": False})
            return await _moved(steps_q.transition(conn, step, StepStatus.FAILED, error=error))
        started = await _moved(steps_q.start_attempt(conn, step))
        job = await jobs_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            attempt=attempt, topic=definition.topic, status=JobStatus.PENDING,
            priority=definition.priority, input=job_input, upstream=upstream, constraints={},
            timeout_ms=definition.timeout_ms, available_at=available_at,
            policy_snapshot_hash=None)
        await self._event(conn, state, "job.dispatched", step.step_id, job_id=job.job_id,
                          attempt=attempt, data={"topic": job.topic,
                                                 "available_at": job.available_at.isoformat()})
        state.topics.add(definition.topic)
        return started

    async def _request_approval(self, conn: Conn, state: _Pass, definition: StepDef,
                                step: StepRow) -> StepRow:
        approval = await approvals_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            job_id=None, kind="step", policy_snapshot_hash=None, job_hash=None,
            requested_by=state.run.created_by,
            expires_in_ms=definition.expires_in_ms or self.approval_expires_ms)
        await self._event(conn, state, "approval.requested", step.step_id, data={
            "approval_id": str(approval.approval_id), "kind": approval.kind,
            "expires_at": approval.expires_at.isoformat() if approval.expires_at else None})
        return await _moved(steps_q.transition(conn, step, StepStatus.WAITING))

    async def _notify(self, conn: Conn, state: _Pass, definition: StepDef,
                      step: StepRow) -> StepRow:
        payload = {"run_id": str(step.run_id), "workflow_id": state.run.workflow_id,
                   "step_id": step.step_id}
        note = await notifications_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            message=definition.message, webhook=definition.webhook, payload=payload)
        await self._event(conn, state, "notify.sent", step.step_id, data={
            "notification_id": str(note.notification_id), "webhook": note.webhook is not None})
        return await _moved(steps_q.transition(
            conn, step, StepStatus.SUCCEEDED,
            output={"notification_id": str(note.notification_id)}))

    async def _settle(self, conn: Conn, state: _Pass, target: RunStatus) -> None:
        """Moves the run (already out of pending) to ``target``."""
        run = state.run
        if run.status is target:
            return
        output: Any = None
        error: Any = None
        if target.is_final:
            kind = f"run.{target.value}"
            output = {sid: state.steps[sid].output for sid in dag.sink_steps(state.workflow)
                      if state.steps[sid].status is StepStatus.SUCCEEDED}
            error = {sid: s.error for sid, s in state.steps.items()
                     if s.status in (StepStatus.FAILED, StepStatus.DENIED, StepStatus.TIMED_OUT)
                     and s.error is not None} or None
        else:
            kind = "run.waiting" if target is RunStatus.WAITING else "run.resumed"
        await _moved(runs_q.transition(conn, run, target, output=output, error=error))
        await self._event(conn, state, kind, data={"status": target.value})

    async def _event(self, conn: Conn, state: _Pass, kind: str, step_id: str | None = None, *,
                     job_id: str | None = None, attempt: int | None = None,
                     data: dict[str, Any] | None = None) -> None:
        await timeline_q.append(conn, state.run.tenant_id, state.run.run_id, kind,
                                step_id=step_id, job_id=job_id, attempt=attempt, actor=ACTOR,
                                data=data)


async def _moved(pending: Awaitable[T | None]) -> T:
    """Awaits a guarded transition; no row back means someone else moved the object,
    which cannot happen while we hold the run lock — so it is a bug worth surfacing."""
    row = await pending
    if row is None:
        raise InvalidTransition("a step or run changed under the scheduler's run lock")
    return row
