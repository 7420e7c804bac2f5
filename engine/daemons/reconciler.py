"""The reconciler: finds runs that should move and do not, and moves them.

All Warden state changes are transactional, so a stuck run means a bug, a manual change,
or a crash in a place we did not foresee — defence in depth, not the normal path. Each
repair writes ``reconciler.repaired`` saying what it found and did. Every query takes its
rows with SKIP LOCKED and changes them in the same transaction, so any number of
`warden serve` processes can reconcile at once without acting twice.

Also here, because they are matters of time rather than of events: the run-level deadline
(``timeout_ms`` of a definition), and claimable jobs nobody claimed within the dispatch
timeout (reported once, and their topics announced again — never lost).

The two repairs that look at every open run (stuck runs, stalled steps) are **sweeps**
and run once every ``sweep_interval`` (a minute by default), the time-driven checks every
pass: a sweep walks every open run's index entries, and while an old snapshot is open
also the entries of every run that ended since, which grow with the snapshot's age
(docs/design.md#sweeps). The unclaimed jobs are looked for a window back from the dispatch
timeout on most passes and all the way once in five minutes (docs/design.md#lookbacks).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from engine.core.enums import StepStatus
from engine.core.errors import InvalidTransition
from engine.process import metrics, tracing
from engine.process.lookback import Lookback
from engine.runs.services import Services
from engine.runs.stopping import DEADLINE, approvals_for_trace, end_tree
from engine.store import jobs as jobs_q
from engine.store import reconciler as q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.connection import Conn
from engine.store.records import JobRow

log = logging.getLogger(__name__)

ACTOR = "reconciler"


@dataclass(frozen=True)
class Repairs:
    deadlines: int = 0
    flagged: int = 0
    stalled: int = 0
    unclaimed: int = 0

    @property
    def total(self) -> int:
        return self.deadlines + self.flagged + self.stalled + self.unclaimed


class Reconciler:
    def __init__(self, svc: Services, *, dispatch_timeout: timedelta = timedelta(minutes=5),
                 grace: timedelta = timedelta(seconds=30), batch_size: int = 100,
                 sweep_interval: timedelta = timedelta(minutes=1),
                 pass_interval: timedelta = timedelta(seconds=10)) -> None:
        self.svc = svc
        self.dispatch_timeout = dispatch_timeout
        self.grace = grace
        self.batch_size = batch_size
        # the sweeps' schedule is a lookback's "all the way" pass: the first pass sweeps
        self._sweeps = Lookback(window_s=0.0, full_s=sweep_interval.total_seconds(),
                                loop="reconciler")
        # unclaimed jobs: the jobs that passed the dispatch timeout within the last three
        # passes (``pass_interval``: how often the caller runs run_once), everything once
        # in 5 min; a report is a nudge, not a deadline, and a full look walks whatever an
        # old snapshot keeps
        self._unclaimed_lookback = Lookback(window_s=3 * pass_interval.total_seconds(),
                                            full_s=300.0, loop="unclaimed")

    def sweep_due(self) -> bool:
        """True once every ``sweep_interval``, on the process's monotonic clock: it only
        decides when to look; what counts as stuck is decided on database time."""
        return self._sweeps.next() is None

    async def run_once(self, *, sweep: bool = True) -> Repairs:
        """One pass: deadlines and unclaimed jobs always, the sweeps when ``sweep``."""
        deadlines = await self._deadlines()
        flagged = stalled = 0
        if sweep:
            with self._sweeps.full_pass():
                flagged = await self._flag_stuck()
                stalled = await self._stalled()
        repairs = Repairs(deadlines, flagged, stalled, await self._unclaimed())
        metrics.repaired(asdict(repairs))
        if repairs.total:
            log.warning("reconciler repaired %s", repairs, extra={"repairs": repairs.total})
        return repairs

    async def _deadlines(self) -> int:
        async with self.svc.db.connection() as conn:
            due = await q.runs_past_deadline(conn, self.batch_size)
        ended = 0
        for run in due:
            try:
                async with self.svc.db.transaction() as conn:
                    row = await end_tree(conn, run, DEADLINE, by=ACTOR, error={
                        "type": "RunDeadline", "deadline_at": run.deadline_at.isoformat()
                        if run.deadline_at else None})
                    await timeline_q.append(conn, run.tenant_id, run.run_id,
                                            "reconciler.repaired", actor=ACTOR,
                                            data={"action": "ended run past its deadline"})
                    approvals = await approvals_for_trace(conn, row)
                tracing.run_ended(row, approvals)
                ended += 1
            except InvalidTransition:
                continue  # it ended meanwhile (another reconciler, or its last step)
        return ended

    async def _flag_stuck(self) -> int:
        async with self.svc.db.transaction() as conn:
            flagged = await q.flag_stuck_runs(conn, grace=self.grace, limit=self.batch_size)
            for row in flagged:
                await timeline_q.append(conn, row["tenant_id"], row["run_id"],
                                        "reconciler.repaired", actor=ACTOR,
                                        data={"action": "woke the scheduler",
                                              "found": row["reason"]})
        return len(flagged)

    async def _stalled(self) -> int:
        async with self.svc.db.transaction() as conn:
            stalled = await q.stalled_steps(conn, grace=self.grace, limit=self.batch_size)
            for step in stalled:
                if step.attempts < step.max_attempts:
                    await q.retry_step(conn, step)
                    action = f"scheduled attempt {step.attempts + 1}"
                else:
                    await steps_q.transition(conn, step, StepStatus.FAILED, error={
                        "type": "Stalled", "message": "no attempt left and none running"})
                    action = "failed the step: no attempt left"
                await timeline_q.append(conn, step.tenant_id, step.run_id,
                                        "reconciler.repaired", step_id=step.step_id,
                                        actor=ACTOR, data={
                                            "action": action,
                                            "found": "running step with no unfinished job"})
                await runs_q.wake(conn, step.tenant_id, step.run_id)
        return len(stalled)

    async def _unclaimed(self) -> int:
        with self._unclaimed_lookback.look() as back:
            async with self.svc.db.transaction() as conn:
                jobs = await q.unclaimed_jobs(conn, timeout=self.dispatch_timeout,
                                              limit=self.batch_size, lookback_s=back)
                await _report_unclaimed(conn, jobs)
        return len(jobs)


async def _report_unclaimed(conn: Conn, jobs: list[JobRow]) -> None:
    """Each job's repair on its run's timeline, then its topic announced again."""
    for job in sorted(jobs, key=lambda j: (j.tenant_id, str(j.run_id))):  # lock order
        await timeline_q.append(conn, job.tenant_id, job.run_id, "reconciler.repaired",
                                step_id=job.step_id, job_id=job.job_id,
                                attempt=job.attempt, actor=ACTOR, data={
                                    "action": "announced the topic again",
                                    "found": "claimable job unclaimed past the "
                                             "dispatch timeout",
                                    "topic": job.topic})
        log.warning("job %s unclaimed since %s (topic %s): no worker for it?",
                    job.job_id, job.available_at.isoformat(), job.topic,
                    extra={"job_id": job.job_id, "topic": job.topic})
    await jobs_q.announce(conn, [j.topic for j in jobs])
