"""The reaper: ends attempts whose lease expired, and approvals nobody decided in time;
flags the runs whose timers or wait timeouts came due (the scheduler then moves them,
engine/scheduling/flow.py).

Both use database time only. Expired leases become ``timed_out`` attempts whose retry is
scheduled by the same SQL as a failure (warden.end_attempt); expired approvals end their
step ``timed_out`` and the scheduler then ends the run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from engine.core.enums import JobStatus, StepStatus
from engine.process import metrics
from engine.process.lookback import Lookback
from engine.store import Database
from engine.store import approvals as approvals_q
from engine.store import flow as flow_q
from engine.store import items as items_q
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import RunKey

log = logging.getLogger(__name__)

ACTOR = "reaper"


@dataclass(frozen=True)
class Reaped:
    jobs: int
    approvals: int
    waits: int = 0  # runs flagged for a timer or a wait timeout that came due


class Reaper:
    def __init__(self, db: Database, *, batch_size: int = 100,
                 timer_horizon_s: float = 1.0) -> None:
        self.db = db
        self.batch_size = batch_size
        # a timer due within this many seconds is waited for in the pass (the reaper's
        # poll interval: `warden serve` passes it), so timers fire on time, not a poll late
        self.timer_horizon_s = timer_horizon_s
        # a few seconds of expired leases per pass, all of them once a minute
        # (engine/process/lookback.py)
        self.lookback = Lookback(loop="reaper")

    async def run_once(self) -> Reaped:
        with self.lookback.look() as back:
            async with self.db.connection() as conn:
                jobs = await jobs_q.reap_expired(conn, self.batch_size, back)
        approvals = await self._expire_approvals()
        woken = await self._wake_due()
        async with self.db.connection() as conn:
            ahead = await flow_q.seconds_to_next_wake(conn)
        if ahead is not None and ahead < self.timer_horizon_s:
            # a timer due before the next pass: wait for it here rather than a poll late
            await asyncio.sleep(max(ahead, 0.0))
            woken += await self._wake_due()
        metrics.reaped(leases=jobs, approvals=approvals)
        if jobs or approvals:
            log.info("reaped %d expired leases, %d expired approvals", jobs, approvals,
                     extra={"reaped_jobs": jobs, "expired_approvals": approvals})
        return Reaped(jobs, approvals, len(woken))

    async def _wake_due(self) -> list[RunKey]:
        async with self.db.transaction() as conn:
            woken = await flow_q.wake_due(conn, self.batch_size)
            if woken:
                await runs_q.notify_schedulers(conn)
        return woken

    async def _expire_approvals(self) -> int:
        async with self.db.transaction() as conn:
            expired = await approvals_q.expire_due(conn, self.batch_size)
            # runs are locked by the events below in (tenant, run) order: two reapers
            # holding disjoint approvals of the same runs never wait in a cycle
            for approval in sorted(expired, key=lambda a: (a.tenant_id, str(a.run_id))):
                await timeline_q.append(
                    conn, approval.tenant_id, approval.run_id, "approval.expired",
                    step_id=approval.step_id, job_id=approval.job_id, actor=ACTOR,
                    data={"approval_id": str(approval.approval_id),
                          "expires_at": approval.expires_at.isoformat()
                          if approval.expires_at else None})
                error = {"type": "ApprovalExpired", "approval_id": str(approval.approval_id)}
                job = None if approval.job_id is None else await jobs_q.get(
                    conn, approval.tenant_id, approval.job_id)
                if job is not None and job.item_index is not None:
                    # a for_each item's approval: the item times out, the scheduler then
                    # ends its step (engine.scheduling.fanout)
                    await items_q.transition_by_key(
                        conn, approval.tenant_id, approval.run_id, approval.step_id,
                        job.item_index, StepStatus.WAITING, StepStatus.TIMED_OUT, error=error)
                else:
                    await steps_q.transition_by_key(
                        conn, approval.tenant_id, approval.run_id, approval.step_id,
                        StepStatus.WAITING, StepStatus.TIMED_OUT, error=error)
                if job is not None and job.status is JobStatus.BLOCKED:
                    # the job it held back will never run
                    await jobs_q.transition(conn, job, JobStatus.TIMED_OUT, error=error)
                await runs_q.wake(conn, approval.tenant_id, approval.run_id)
        return len(expired)
