"""The scheduler: moves runs along their DAG.

Each pass locks a batch of runs flagged ``needs_scheduling`` (SKIP LOCKED, so any number
of `warden serve` processes share the work and none advances a run twice), re-evaluates
jobs whose policy snapshot is no longer active, asks `engine.dag` what to do, applies it
through the dispatch gate (`engine.dispatch`) — jobs, approvals, notifications, skips, the
run's own status — with every change's timeline event in the same transaction, and clears
the flag.
"""

from __future__ import annotations

import logging
from typing import Any

from engine import dag, metrics
from engine.definitions import StepDef
from engine.dispatch import Busy, Dispatcher, RunPass, moved
from engine.enums import RunStatus, StepStatus, StepType
from engine.errors import WardenError
from engine.services import Services
from engine.store import Conn
from engine.store import jobs as jobs_q
from engine.store import notifications as notifications_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store.records import RunRow, StepRow

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, svc: Services, *, batch_size: int = 50) -> None:
        self.svc = svc
        self.dispatcher = Dispatcher(svc)
        self.batch_size = batch_size

    async def run_once(self) -> int:
        """One pass over up to ``batch_size`` runs; returns how many were taken."""
        async with self.svc.db.transaction() as conn:
            runs = await runs_q.lock_for_scheduling(conn, self.batch_size)
            topics: set[str] = set()
            for run in runs:
                try:
                    # a savepoint per run: one run that cannot advance never blocks the rest
                    async with conn.transaction():
                        topics |= await self._advance(conn, run)
                except Busy:
                    log.debug("run %s: an approval is being decided; next pass", run.run_id)
                except WardenError:
                    log.exception("run %s could not advance; it stays flagged", run.run_id,
                                  extra={"run_id": str(run.run_id)})
            await jobs_q.announce(conn, topics)
        return len(runs)

    async def _advance(self, conn: Conn, run: RunRow) -> set[str]:
        if run.status.is_final:
            await runs_q.mark_scheduled(conn, run.tenant_id, run.run_id)
            return set()
        workflow = await self.svc.definitions.get(conn, run.tenant_id, run.workflow_id,
                                                  run.workflow_version)
        rows = await steps_q.of_run(conn, run.tenant_id, run.run_id)
        state = RunPass(run, workflow, {s.step_id: s for s in rows})
        if run.status is RunStatus.PENDING:  # so run.started precedes the first step event
            state.run = await moved(runs_q.transition(conn, run, RunStatus.RUNNING))
            await state.event(conn, "run.started")
        await self._recheck_policy(conn, state)
        # every action moves one step forward for good, so this bound is never reached by
        # a healthy run; it only stops a bug from looping inside a held transaction
        for _ in range(3 * len(workflow.steps) + 1):
            action = dag.next_action(workflow, _states(state))
            if action is None:
                break
            state.steps[action.step_id] = await self._apply(conn, state, action)
        await self._settle(conn, state, dag.run_status(_states(state)))
        await state.flush(conn)
        await runs_q.mark_scheduled(conn, run.tenant_id, run.run_id)
        return state.topics

    async def _recheck_policy(self, conn: Conn, state: RunPass) -> None:
        """Jobs not yet claimed, dispatched under a snapshot that is no longer active."""
        waiting = await jobs_q.awaiting_claim(conn, state.run.tenant_id, state.run.run_id)
        if not waiting:
            return
        active = (await state.policy(self.svc, conn)).snapshot_hash
        for job in waiting:
            if job.policy_snapshot_hash != active:
                await self.dispatcher.reevaluate(conn, state, job)

    async def _apply(self, conn: Conn, state: RunPass, action: dag.Action) -> StepRow:
        step = state.steps[action.step_id]
        definition = state.workflow.steps[action.step_id]
        if isinstance(action, dag.Skip):
            await state.event(conn, "step.skipped", step.step_id,
                              data={"because": action.because})
            return await moved(steps_q.transition(conn, step, StepStatus.SKIPPED))
        if isinstance(action, dag.Retry):
            return await self.dispatcher.dispatch_job(conn, state, definition, step,
                                                      action.available_at)
        await state.event(conn, "step.ready", step.step_id)
        if definition.type is StepType.JOB:
            return await self.dispatcher.dispatch_job(conn, state, definition, step, None)
        if definition.type is StepType.APPROVAL:
            return await self.dispatcher.request_step_approval(conn, state, definition, step)
        return await self._notify(conn, state, definition, step)

    async def _notify(self, conn: Conn, state: RunPass, definition: StepDef,
                      step: StepRow) -> StepRow:
        payload = {"run_id": str(step.run_id), "workflow_id": state.run.workflow_id,
                   "step_id": step.step_id}
        note = await notifications_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            message=definition.message, webhook=definition.webhook, payload=payload)
        await state.event(conn, "notify.sent", step.step_id, data={
            "notification_id": str(note.notification_id), "webhook": note.webhook is not None})
        return await moved(steps_q.transition(
            conn, step, StepStatus.SUCCEEDED,
            output={"notification_id": str(note.notification_id)}))

    async def _settle(self, conn: Conn, state: RunPass, target: RunStatus) -> None:
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
        state.run = await moved(runs_q.transition(conn, run, target, output=output, error=error))
        metrics.run_ended(state.run)
        await state.event(conn, kind, data={"status": target.value})


def _states(state: RunPass) -> dict[str, dag.StepState]:
    return {sid: dag.StepState(s.status, s.attempts, s.retry_at)
            for sid, s in state.steps.items()}
