"""Ending a run before its steps are done: cancellation by an operator, or the run-level
deadline (``timeout_ms`` of the definition) passing.

In one transaction: unfinished jobs end at once (a running one learns it at its next
heartbeat, and its late completion is fenced), open approvals close, unfinished steps and
for_each items end, and the run ends — each change with its timeline event. A run's open
child runs (docs/workflows.md#sub-workflows) end first, depth first, in the same
transaction: a child is locked before its parent, the order a child's own scheduler pass
takes them in (it holds the child, then wakes the parent). A child that ends so wakes
its parent, whose pass then maps the child's status onto the step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.core.enums import ApprovalStatus, JobStatus, RunStatus, StepStatus
from engine.core.errors import InvalidTransition
from engine.process import metrics, tracing
from engine.runs.lifecycle import get_row
from engine.store import Conn, Database
from engine.store import approvals as approvals_q
from engine.store import items as items_q
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import ApprovalRow, JobRow, RunRow


@dataclass(frozen=True)
class Ending:
    run: RunStatus
    job: JobStatus
    job_event: str
    unstarted_step: StepStatus  # a step that never started
    started_step: StepStatus  # a step that was running or waiting


CANCELLED = Ending(RunStatus.CANCELLED, JobStatus.CANCELLED, "job.cancelled",
                   StepStatus.CANCELLED, StepStatus.CANCELLED)
DEADLINE = Ending(RunStatus.TIMED_OUT, JobStatus.TIMED_OUT, "job.timed_out",
                  StepStatus.SKIPPED, StepStatus.TIMED_OUT)


async def cancel(db: Database, *, tenant_id: str | None, run_id: UUID, by: str,
                 reason: str | None = None) -> RunRow:
    async with db.transaction() as conn:
        run = await get_row(conn, tenant_id, run_id)
        ended = await end_tree(conn, run, CANCELLED, by=by,
                               error={"type": "RunCancelled", "by": by, "reason": reason})
        approvals = await approvals_for_trace(conn, ended)
    tracing.run_ended(ended, approvals)
    return ended


async def approvals_for_trace(conn: Conn, run: RunRow) -> list[ApprovalRow]:
    """The approval waits an ended run's span shows (engine.process.tracing), read in the
    transaction that ended it; none read while traces are off."""
    if not tracing.enabled():
        return []
    return await approvals_q.of_run(conn, run.tenant_id, run.run_id)


async def end_tree(conn: Conn, run: RunRow, ending: Ending, *, by: str,
                   error: dict[str, Any], nowait: bool = False,
                   wake_parent: bool = True) -> RunRow:
    """Ends a run and, first, its open child runs, depth first (end_run for each).
    ``nowait``: from a parent's scheduler pass, which holds the parent (end_run)."""
    await _end_children(conn, run, ending, by=by, error=error, nowait=nowait)
    return await end_run(conn, run, ending, by=by, error=error, nowait=nowait,
                         wake_parent=wake_parent)


async def _end_children(conn: Conn, run: RunRow, ending: Ending, *, by: str,
                        error: dict[str, Any], nowait: bool) -> None:
    for child in await runs_q.children_of_run(conn, run.tenant_id, run.run_id):
        if child.status.is_final:
            continue
        await _end_children(conn, child, ending, by=by, error=error, nowait=nowait)
        # its parent ends in this transaction too: waking it would lock the parent before
        # the parent's jobs, against the lock order. InvalidTransition: it ended meanwhile.
        with contextlib.suppress(InvalidTransition):
            await end_run(conn, child, ending, by=by, nowait=nowait, wake_parent=False,
                          error={**error, "parent_run_id": str(run.run_id)})


async def end_run(conn: Conn, run: RunRow, ending: Ending, *, by: str,
                  error: dict[str, Any], nowait: bool = False,
                  wake_parent: bool = True) -> RunRow:
    """Ends an open run in the caller's transaction; InvalidTransition if it already ended.

    ``nowait``: every lock is taken NOWAIT (Busy if held): a parent's scheduler pass ends
    children while holding the parent, and must never wait on what may wait on it."""
    if run.status.is_final:
        raise InvalidTransition(f"run {run.run_id} already ended {run.status}")
    tenant, run_id = run.tenant_id, run.run_id
    # lock order: jobs, then approvals, then the run, then steps
    jobs = await jobs_q.lock_open_of_run(conn, tenant, run_id, nowait=nowait)
    pending = await approvals_q.lock_pending_of_run(conn, tenant, run_id, nowait=nowait)
    locked = await (runs_q.lock_nowait if nowait else runs_q.lock)(conn, tenant, run_id)
    assert locked is not None  # runs are never deleted
    if locked.status.is_final:  # it ended while we waited for the locks
        raise InvalidTransition(f"run {run_id} already ended {locked.status}")
    # the scheduler may have dispatched more before we held the run; no more can come now
    seen = {job.job_id for job in jobs}
    jobs += [j for j in await jobs_q.lock_new_of_run(conn, tenant, run_id)
             if j.job_id not in seen]
    for job in jobs:
        await _end_job(conn, job, ending, by, error)
    for approval in pending:
        await approvals_q.close(conn, approval, ApprovalStatus.EXPIRED,
                                f"run ended {ending.run.value} by {by}")
        await timeline_q.append(conn, tenant, run_id, "approval.expired",
                                step_id=approval.step_id, job_id=approval.job_id, actor=by,
                                data={"approval_id": str(approval.approval_id),
                                      "reason": f"run {ending.run.value}"})
    items = await items_q.end_open(conn, tenant, run_id, None,
                                   unstarted=ending.unstarted_step,
                                   started=ending.started_step, error=error)
    for step in await steps_q.of_run(conn, tenant, run_id):
        if not step.status.is_final:
            started = step.status is not StepStatus.PENDING
            await steps_q.transition(
                conn, step, ending.started_step if started else ending.unstarted_step,
                error=error)
    ended = await runs_q.transition(conn, locked, ending.run, error=error)
    assert ended is not None  # the run is locked and was not final
    metrics.run_ended(ended)
    data = {**error, "jobs_ended": len(jobs)}
    if items:
        data["items_ended"] = len(items)
    await timeline_q.append(conn, tenant, run_id, f"run.{ending.run.value}", actor=by,
                            data=data)
    if wake_parent and ended.parent_run_id is not None:  # its step maps the child's status
        await runs_q.wake_parent(conn, tenant, ended.parent_run_id)
    return ended


async def _end_job(conn: Conn, job: JobRow, ending: Ending, by: str,
                   error: dict[str, Any]) -> None:
    ended = await jobs_q.end(conn, job, ending.job, error)
    if ended is not None:
        await timeline_q.append(conn, job.tenant_id, job.run_id, ending.job_event,
                                step_id=job.step_id, job_id=job.job_id, attempt=job.attempt,
                                actor=by, data={"was": job.status.value, "worker": job.worker})
