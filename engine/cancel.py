"""Cancelling a run: pending and blocked jobs end at once, running ones are told through
their next heartbeat (and their late completion is fenced), open approvals close, every
unfinished step ends ``cancelled``, and the run ends ``cancelled`` — in one transaction.
"""

from __future__ import annotations

from uuid import UUID

from engine.enums import ApprovalStatus, RunStatus, StepStatus
from engine.errors import InvalidTransition
from engine.runs import get_row
from engine.store import Database
from engine.store import approvals as approvals_q
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import RunRow


async def cancel(db: Database, *, tenant_id: str | None, run_id: UUID, by: str,
                 reason: str | None = None) -> RunRow:
    async with db.transaction() as conn:
        run = await get_row(conn, tenant_id, run_id)
        if run.status.is_final:
            raise InvalidTransition(f"run {run_id} already ended {run.status}")
        tenant = run.tenant_id
        # lock order: jobs, then approvals, then the run, then steps
        jobs = await jobs_q.lock_open_of_run(conn, tenant, run_id)
        pending = await approvals_q.lock_pending_of_run(conn, tenant, run_id)
        locked = await runs_q.lock(conn, tenant, run_id)
        assert locked is not None  # runs are never deleted
        run = locked
        if run.status.is_final:  # it ended while we waited for the locks
            raise InvalidTransition(f"run {run_id} already ended {run.status}")
        # the scheduler may have dispatched more before we held the run; no more can come now
        seen = {job.job_id for job in jobs}
        jobs += [j for j in await jobs_q.lock_new_of_run(conn, tenant, run_id)
                 if j.job_id not in seen]
        for job in jobs:
            cancelled = await jobs_q.cancel(conn, job, by)
            if cancelled is not None:
                await timeline_q.append(conn, tenant, run_id, "job.cancelled",
                                        step_id=job.step_id, job_id=job.job_id,
                                        attempt=job.attempt, actor=by,
                                        data={"was": job.status.value, "worker": job.worker})
        for approval in pending:
            await approvals_q.close(conn, approval, ApprovalStatus.EXPIRED,
                                    f"run cancelled by {by}")
            await timeline_q.append(conn, tenant, run_id, "approval.expired",
                                    step_id=approval.step_id, job_id=approval.job_id, actor=by,
                                    data={"approval_id": str(approval.approval_id),
                                          "reason": "run cancelled"})
        for step in await steps_q.of_run(conn, tenant, run_id):
            if not step.status.is_final:
                await steps_q.transition(conn, step, StepStatus.CANCELLED,
                                         error={"type": "RunCancelled", "by": by})
        ended = await runs_q.transition(conn, run, RunStatus.CANCELLED,
                                        error={"type": "RunCancelled", "by": by,
                                               "reason": reason})
        assert ended is not None  # the run is locked and was not final
        await timeline_q.append(conn, tenant, run_id, "run.cancelled", actor=by,
                                data={"reason": reason, "jobs_cancelled": len(jobs)})
    return ended
