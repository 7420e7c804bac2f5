"""Every worker write is fenced once its lease has expired, even though no reaper ran.

The other fencing tests let the reaper end the attempt first, so the write meets a job
that is no longer running: they would pass without the ``lease_expires_at > now()``
guard of warden.complete_job, complete_jobs, fail_job, heartbeat_job and release_job.
Here the job is still ``running`` under the caller's own token when the write arrives;
only the expiry on the database clock stands between the write and the rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from engine.core.enums import Outcome
from engine.core.errors import LeaseLost
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store.jobs import Completion
from engine.store.records import ClaimedJob
from tests import support

pytestmark = pytest.mark.anyio

LEASE_S = 0.3

WORKFLOW = """
id: expiring
name: expiring
version: 1.0.0
steps:
  work:
    type: job
    topic: t.expiring
    retries: {max_attempts: 3, backoff_ms: 0, jitter: 0}
  other: {type: job, topic: t.expiring}
  after: {type: job, topic: t.after, depends_on: [work, other]}
"""


async def _sql(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def _snapshot(db: Database, run_id: UUID) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run that a worker write could touch, whole."""
    return {
        "jobs": await _sql(db, "SELECT to_jsonb(j) FROM warden.jobs j WHERE run_id = %s "
                               "ORDER BY job_id", run_id),
        "steps": await _sql(db, "SELECT to_jsonb(s) FROM warden.steps s WHERE run_id = %s "
                                "ORDER BY step_id", run_id),
        "run": await _sql(db, "SELECT to_jsonb(r) FROM warden.runs r WHERE run_id = %s",
                          run_id),
        "timeline": await _sql(db, "SELECT to_jsonb(t) FROM warden.timeline t "
                                   "WHERE run_id = %s ORDER BY seq", run_id),
    }


async def _expired(db: Database, scheduler: Scheduler, *,
                   keep: bool = False) -> tuple[ClaimedJob, ClaimedJob | None]:
    """Claims ``work`` (and ``other``) with a short lease and waits, on the database clock,
    until the lease of ``work`` has passed. ``keep``: ``other``'s lease is extended first,
    so it is still held when ``work``'s has expired."""
    await support.store(db, WORKFLOW)
    await support.start(db, "expiring")
    await support.settle(scheduler)
    claimed = {j.step_id: j for j in await support.claim(db, ["t.expiring"], lease_s=LEASE_S)}
    assert sorted(claimed) == ["other", "work"]
    job, other = claimed["work"], claimed["other"]
    if keep:
        async with db.connection() as conn:
            await jobs_q.heartbeat(conn, job_id=other.job_id, lease_token=other.lease_token,
                                   extend=timedelta(seconds=60))

    async def lease_passed() -> bool:
        [(passed,)] = await _sql(db, "SELECT lease_expires_at <= now() FROM warden.jobs "
                                     "WHERE job_id = %s", job.job_id)
        return bool(passed)

    await support.wait_for(lease_passed, timeout=10, interval=0.05,
                           what="the lease to pass on the database clock")
    # nothing but the expiry fences the write: the job still runs under this very token,
    # and no reaper (nor anything else) has ended the attempt
    rows = await _sql(db, "SELECT status::text, lease_token, lease_expires_at <= now() "
                          "FROM warden.jobs WHERE run_id = %s AND step_id = 'work'", job.run_id)
    assert rows == [("running", job.lease_token, True)]
    assert not await _sql(db, "SELECT kind FROM warden.timeline WHERE run_id = %s "
                              "AND kind::text LIKE 'job.%%' "
                              "AND kind NOT IN ('job.dispatched', 'job.claimed')", job.run_id)
    return job, other if keep else None


async def _heartbeat(db: Database, job: ClaimedJob) -> None:
    async with db.connection() as conn:
        await jobs_q.heartbeat(conn, job_id=job.job_id, lease_token=job.lease_token,
                               extend=timedelta(seconds=30))


async def _heartbeat_with_checkpoint(db: Database, job: ClaimedJob) -> None:
    async with db.connection() as conn:
        await jobs_q.heartbeat(conn, job_id=job.job_id, lease_token=job.lease_token,
                               extend=timedelta(seconds=30), checkpoint={"page": 7})


async def _complete(db: Database, job: ClaimedJob) -> None:
    async with db.connection() as conn:
        await jobs_q.complete(conn, job_id=job.job_id, lease_token=job.lease_token,
                              result={"late": True})


async def _fail_retryable(db: Database, job: ClaimedJob) -> None:
    async with db.connection() as conn:
        await jobs_q.fail(conn, job_id=job.job_id, lease_token=job.lease_token,
                          error={"type": "Late"}, retryable=True)


async def _fail_for_good(db: Database, job: ClaimedJob) -> None:
    async with db.connection() as conn:
        await jobs_q.fail(conn, job_id=job.job_id, lease_token=job.lease_token,
                          error={"type": "Late"}, retryable=False)


async def _release(db: Database, job: ClaimedJob) -> None:
    async with db.connection() as conn:
        await jobs_q.release(conn, job_id=job.job_id, lease_token=job.lease_token,
                             reason="worker stopping")


WRITES: dict[str, Callable[[Database, ClaimedJob], Awaitable[None]]] = {
    "complete_job": _complete,
    "fail_job retryable": _fail_retryable,
    "fail_job not retryable": _fail_for_good,
    "heartbeat_job": _heartbeat,
    "heartbeat_job with checkpoint": _heartbeat_with_checkpoint,
    "release_job": _release,
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_after_the_lease_expired_is_fenced_before_any_reaper_ran(
        db: Database, scheduler: Scheduler, write: str) -> None:
    job, _ = await _expired(db, scheduler)
    before = await _snapshot(db, job.run_id)
    with pytest.raises(LeaseLost):
        await WRITES[write](db, job)
    assert await _snapshot(db, job.run_id) == before


async def test_a_checkpoint_sent_after_expiry_is_not_stored(
        db: Database, scheduler: Scheduler) -> None:
    job, _ = await _expired(db, scheduler)
    with pytest.raises(LeaseLost):
        await _heartbeat_with_checkpoint(db, job)
    assert await _sql(db, "SELECT checkpoint FROM warden.jobs WHERE job_id = %s",
                      job.job_id) == [(None,)]
    assert not await _sql(db, "SELECT 1 FROM warden.timeline WHERE run_id = %s "
                              "AND kind = 'job.checkpointed'", job.run_id)


async def test_complete_jobs_fences_the_expired_job_and_completes_the_held_one(
        db: Database, scheduler: Scheduler) -> None:
    job, held = await _expired(db, scheduler, keep=True)
    assert held is not None
    before = await _snapshot(db, job.run_id)
    async with db.connection() as conn:
        outcomes = await jobs_q.complete_many(conn, [
            Completion.of(job.job_id, job.lease_token, {"late": True}),
            Completion.of(held.job_id, held.lease_token, {"on": "time"})])
    assert outcomes == {job.job_id: Outcome.LEASE_LOST, held.job_id: Outcome.COMPLETED}
    after = await _snapshot(db, job.run_id)
    # the expired job and its step are exactly as they were ...
    assert [r for r in after["jobs"] if r[0]["job_id"] == job.job_id] == [
        r for r in before["jobs"] if r[0]["job_id"] == job.job_id]
    assert [r for r in after["steps"] if r[0]["step_id"] == "work"] == [
        r for r in before["steps"] if r[0]["step_id"] == "work"]
    # ... and the timeline gained the held job's success only
    added = after["timeline"][len(before["timeline"]):]
    assert after["timeline"][:len(before["timeline"])] == before["timeline"]
    assert [(e["kind"], e["job_id"]) for (e,) in added] == [("job.succeeded", held.job_id)]


async def test_complete_jobs_alone_changes_nothing_for_an_expired_job(
        db: Database, scheduler: Scheduler) -> None:
    job, _ = await _expired(db, scheduler)
    before = await _snapshot(db, job.run_id)
    async with db.connection() as conn:
        outcomes = await jobs_q.complete_many(
            conn, [Completion.of(job.job_id, job.lease_token, {"late": True})])
    assert outcomes == {job.job_id: Outcome.LEASE_LOST}
    assert await _snapshot(db, job.run_id) == before
