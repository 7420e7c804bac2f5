"""The worker-facing SQL functions (docs/sql-worker.md): claims, leases, fencing, retries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.core.errors import LeaseLost
from engine.daemons.reaper import Reaper
from engine.scheduling.scheduler import Scheduler
from engine.store import Database, sqlfiles
from engine.store import jobs as jobs_q
from engine.store.connection import connect
from tests import support

pytestmark = pytest.mark.anyio

RETRYING = """
id: retrying
name: retrying
version: 1.0.0
steps:
  work:
    type: job
    topic: t.work
    timeout_ms: 60000
    retries: {max_attempts: 3, backoff_ms: 400, multiplier: 2, jitter: 0}
  after: {type: job, topic: t.after, depends_on: [work]}
"""


async def _one(db: Database, scheduler: Scheduler, topic: str = "t.work", **kw: Any) -> Any:
    await support.settle(scheduler)
    claimed = await support.claim(db, [topic], **kw)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def _sql(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def test_stale_lease_token_can_neither_heartbeat_complete_nor_fail(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING)
    await support.start(db, "retrying")
    first = await _one(db, scheduler, lease_s=30)
    # the lease expires, the reaper ends the attempt and the retry is claimed by another
    await support.advance_clock(db, 31)
    assert (await Reaper(db).run_once()).jobs == 1
    await _sql(db, "UPDATE warden.steps SET retry_at = warden.now() WHERE retry_at IS NOT NULL")
    second = await _one(db, scheduler, worker="w2")
    assert (second.attempt, first.attempt) == (2, 1)
    before = await _sql(db, "SELECT job_id, status, result, lease_expires_at FROM warden.jobs "
                            "ORDER BY job_id")
    async with db.connection() as conn:
        with pytest.raises(LeaseLost):
            await jobs_q.heartbeat(conn, job_id=first.job_id, lease_token=first.lease_token,
                                   extend=timedelta(seconds=30))
        with pytest.raises(LeaseLost):
            await jobs_q.complete(conn, job_id=first.job_id, lease_token=first.lease_token,
                                  result={"late": True})
        with pytest.raises(LeaseLost):
            await jobs_q.fail(conn, job_id=first.job_id, lease_token=first.lease_token,
                              error={}, retryable=True)
        # the new holder's token does not fence the old job either
        with pytest.raises(LeaseLost):
            await jobs_q.complete(conn, job_id=first.job_id, lease_token=second.lease_token,
                                  result={})
    after = await _sql(db, "SELECT job_id, status, result, lease_expires_at FROM warden.jobs "
                           "ORDER BY job_id")
    assert before == after  # 0 rows changed
    await support.complete(db, second)
    await support.settle(scheduler)
    statuses = await _sql(db, "SELECT attempt, status::text FROM warden.jobs "
                              "WHERE step_id = 'work' ORDER BY attempt")
    assert statuses == [(1, "timed_out"), (2, "succeeded")]


async def test_a_job_is_completed_exactly_once(db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING)
    await support.start(db, "retrying")
    job = await _one(db, scheduler)
    await support.complete(db, job)
    with pytest.raises(LeaseLost):
        await support.complete(db, job)
    rows = await _sql(db, "SELECT count(*) FROM warden.timeline WHERE kind = 'job.succeeded'")
    assert rows == [(1,)]


async def test_retry_waits_for_backoff_from_database_time_and_carries_the_checkpoint(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING)
    run = await support.start(db, "retrying")
    first = await _one(db, scheduler)
    async with db.connection() as conn:
        await jobs_q.heartbeat(conn, job_id=first.job_id, lease_token=first.lease_token,
                               extend=timedelta(seconds=30), checkpoint={"page": 3})
    await support.fail(db, first)
    await support.settle(scheduler)
    assert await support.claim(db, ["t.work"]) == []  # not before backoff_ms
    second = await support.wait_for(lambda: support.claim(db, ["t.work"]), timeout=5,
                                    what="the retry to become claimable")
    [second_job] = second
    assert second_job.attempt == 2
    assert second_job.checkpoint == {"page": 3}
    rows = await _sql(db, "SELECT (b.available_at - a.finished_at) >= interval '400 ms' "
                          "FROM warden.jobs a JOIN warden.jobs b USING (run_id, step_id) "
                          "WHERE a.attempt = 1 AND b.attempt = 2")
    assert rows == [(True,)]
    # the second backoff doubles (multiplier 2): 800 ms
    await support.fail(db, second_job)
    rows = await _sql(db, "SELECT (data->>'delay_ms')::int FROM warden.timeline "
                          "WHERE kind = 'job.retry_scheduled' ORDER BY seq")
    assert rows == [(400,), (800,)]
    kinds = await support.kinds(db, run.run_id)
    assert kinds.count("job.retry_scheduled") == 2
    assert "job.checkpointed" in kinds


async def test_retries_run_out_then_the_step_and_run_fail(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING.replace("max_attempts: 3", "max_attempts: 2"))
    run = await support.start(db, "retrying")
    await support.fail(db, await _one(db, scheduler))
    await _sql(db, "UPDATE warden.steps SET retry_at = now() WHERE retry_at IS NOT NULL")
    await support.fail(db, await _one(db, scheduler))
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert [s.status for s in detail.steps] == [StepStatus.FAILED, StepStatus.SKIPPED]
    assert detail.run.status is RunStatus.FAILED
    assert [j.status for j in detail.jobs] == [JobStatus.FAILED, JobStatus.FAILED]


async def test_non_retryable_failure_consumes_no_more_attempts(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING)
    run = await support.start(db, "retrying")
    await support.fail(db, await _one(db, scheduler), retryable=False)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.steps[0].status is StepStatus.FAILED and detail.steps[0].attempts == 1


async def test_timeout_ms_bounds_the_lease_however_often_it_is_extended(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING.replace("timeout_ms: 60000", "timeout_ms: 1500"))
    await support.start(db, "retrying")
    job = await _one(db, scheduler, lease_s=600)
    async with db.connection() as conn:
        expires = await jobs_q.heartbeat(conn, job_id=job.job_id, lease_token=job.lease_token,
                                         extend=timedelta(hours=1))
    [(deadline, started)] = await _sql(db, "SELECT deadline_at, started_at FROM warden.jobs")
    assert job.lease_expires_at == expires == deadline
    assert deadline - started == timedelta(milliseconds=1500)


async def test_reaper_times_out_expired_leases_and_schedules_the_retry(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING)
    run = await support.start(db, "retrying")
    await _one(db, scheduler, lease_s=30)
    await support.advance_clock(db, 29)
    assert (await Reaper(db).run_once()).jobs == 0  # not yet
    await support.advance_clock(db, 2)
    assert (await Reaper(db).run_once()).jobs == 1
    detail = await support.detail(db, run.run_id)
    assert detail.jobs[0].status is JobStatus.TIMED_OUT
    assert detail.steps[0].status is StepStatus.RUNNING and detail.steps[0].retry_at is not None
    kinds = await support.kinds(db, run.run_id)
    assert kinds[-2:] == ["job.timed_out", "job.retry_scheduled"]


async def test_claims_are_batched_disjoint_and_in_priority_order(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, """
id: prio
name: p
version: 1.0.0
steps:
  low: {type: job, topic: t.p, priority: 9}
  high: {type: job, topic: t.p, priority: 0}
  mid: {type: job, topic: t.p, priority: 5}
""")
    for _ in range(4):
        await support.start(db, "prio")
    await support.settle(scheduler)
    first = await support.claim(db, ["t.p"], n=5, worker="a")
    second = await support.claim(db, ["t.p"], n=100, worker="b")
    assert len(first) == 5 and len(second) == 7
    assert not {j.job_id for j in first} & {j.job_id for j in second}
    # which jobs a batch takes follows priority (rows come back in run-lock order)
    assert sorted(j.step_id for j in first) == ["high"] * 4 + ["mid"]


async def test_claim_uses_the_partial_index(db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING)
    for _ in range(50):
        await support.start(db, "retrying")
    await support.settle(scheduler)
    # the realistic shape: most rows are finished attempts, a few are claimable
    await _sql(db, """
        INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic, status,
                                 started_at, finished_at)
        SELECT j.tenant_id, j.run_id::text || ':work@' || n, j.run_id, 'work', n, j.topic,
               'succeeded', now(), now()
          FROM warden.jobs j, generate_series(2, 200) AS n""")
    async with db.connection() as conn:
        await conn.execute("ANALYZE warden.jobs")
        cur = await conn.execute(
            "EXPLAIN SELECT tenant_id, job_id FROM warden.jobs WHERE status = 'pending' "
            "AND topic = ANY(%s) AND available_at <= now() ORDER BY priority, available_at "
            "LIMIT 10 FOR UPDATE SKIP LOCKED", [["t.work", "t.after"]])
        plan = "\n".join(r[0] for r in await cur.fetchall())
    assert "jobs_claimable" in plan, plan


async def test_the_fence_never_walks_the_running_jobs(db: Database, scheduler: Scheduler,
                                                     db_url: str) -> None:
    """A worker's write finds its jobs by id (jobs_by_job_id), however many jobs run. The
    trap: statistics taken while nothing ran make the partial index of running jobs look
    empty, and a fence that implied its predicate led the completion's generic plan to
    walk every running job and filter it against the batch (bench/README.md, session 8).
    The statement is complete_jobs' first one, in a generic plan as the function runs it."""
    await support.store(db, RETRYING)
    for _ in range(40):
        await support.start(db, "retrying")
    await support.settle(scheduler)
    await _sql(db, "ANALYZE warden.jobs")  # nothing running yet
    claimed = await support.claim(db, ["t.work"], n=40)
    assert len(claimed) == 40
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        # each job's token at its position in the arguments ($3: id -> position)
        await conn.execute("""
            PREPARE finish(text[], uuid[], jsonb) AS
            UPDATE warden.jobs t SET status = 'succeeded', finished_at = warden.now()
             WHERE t.job_id = ANY ($1)
               AND warden.lease_held(t, $2[($3 ->> t.job_id)::integer])""")
        # bound client-side: EXPLAIN takes no protocol-level parameters
        cur = psycopg.AsyncClientCursor(conn)
        await cur.execute(
            "EXPLAIN EXECUTE finish(%s::text[], %s::uuid[], %s::jsonb)",
            [[j.job_id for j in claimed[:2]], [j.lease_token for j in claimed[:2]],
             Jsonb({j.job_id: n for n, j in enumerate(claimed[:2], start=1)})])
        plan = "\n".join(r[0] for r in await cur.fetchall())
    assert "jobs_running_lease" not in plan, plan
    assert "jobs_by_job_id" in plan, plan


async def test_the_drift_check_probes_each_run(db: Database, scheduler: Scheduler,
                                              db_url: str) -> None:
    """A scheduler pass looks for its runs' drifted jobs one run at a time. The trap, as
    above: statistics taken while no job was pending make jobs_awaiting_claim look empty,
    and the pass's generic plan walked all of it and joined the batch after, which cost
    96 ms a pass once an old snapshot kept every claimed job's entry there
    (bench/README.md, session 10). The statement as the pass runs it, generic."""
    await support.store(db, RETRYING)
    runs = [await support.start(db, "retrying") for _ in range(3)]
    await _sql(db, "ANALYZE warden.jobs")  # nothing pending yet
    await support.settle(scheduler)
    query = sqlfiles.get("jobs_drifted_of_runs").sql
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute("PREPARE drifted(text[], uuid[]) AS " + query.replace(
            "%(tenant_ids)s", "$1").replace("%(run_ids)s", "$2"))
        cur = psycopg.AsyncClientCursor(conn)
        await cur.execute("EXPLAIN EXECUTE drifted(%s::text[], %s::uuid[])",
                          [[r.tenant_id for r in runs], [r.run_id for r in runs]])
        plan = "\n".join(r[0] for r in await cur.fetchall())
        await cur.execute("EXECUTE drifted(%s::text[], %s::uuid[])",
                          [[r.tenant_id for r in runs], [r.run_id for r in runs]])
        assert await cur.fetchall() == []  # nothing drifted: the snapshot is the same
    [jobs_scan] = [line for line in plan.splitlines() if " on jobs j" in line]
    probe = plan.splitlines()[plan.splitlines().index(jobs_scan) + 1]
    assert "run_id = k.run_id" in probe, plan


async def test_a_claim_reads_about_as_many_jobs_as_it_takes(db: Database,
                                                            scheduler: Scheduler) -> None:
    """With thousands claimable, a claim of 10 must not read them all (it did, sorting
    every pending job of its topics, until the index order was used per topic)."""
    await support.store(db, RETRYING)
    await support.start(db, "retrying")
    await support.settle(scheduler)
    await _sql(db, """
        INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic, status,
                                 available_at)
        SELECT j.tenant_id, j.run_id::text || ':work@' || n, j.run_id, 'work', n, j.topic,
               'pending', now() - make_interval(secs => n)
          FROM warden.jobs j, generate_series(2, 3001) AS n""")
    # a connection of its own: a backend's pending statistics can still hold counts of
    # its earlier transactions
    conn = await connect(db.url, autocommit=False)
    try:
        cur = await conn.execute("SELECT job_id FROM warden.claim_jobs(%s, 'w', 10, '30 s')",
                                 [["t.work", "t.after", "t.none"]])
        claimed = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
                                 "WHERE relid = 'warden.jobs'::regclass")
        row = await cur.fetchone()
        assert row is not None
        fetched = row[0]
        await conn.commit()
    finally:
        await conn.close()
    assert len(claimed) == 10
    # the oldest first (priority ties): attempts 3001, 3000, … were made available earliest
    assert sorted(int(c.rsplit("@", 1)[1]) for c in claimed) == list(range(2992, 3002))
    assert fetched < 100, f"a claim of 10 fetched {fetched} job rows through indexes"


async def test_a_claim_reads_the_active_snapshot_once_per_lane_not_per_job(
        db: Database, scheduler: Scheduler) -> None:
    """Only jobs decided under their tenant's active policy snapshot are claimable. The
    lookup of that snapshot is keyed on the lane's tenant, so it runs once per lane (an
    InitPlan); keyed on the job row it ran once per candidate."""
    width = 40
    steps = "\n".join(f"  s{i:02d}: {{type: job, topic: t.lane}}" for i in range(width))
    await support.store(db, f"id: lane\nname: lane\nversion: 1.0.0\nsteps:\n{steps}\n")
    await support.start(db, "lane")
    await support.settle(scheduler)
    conn = await connect(db.url, autocommit=False)  # its own counts, as the test above
    try:
        cur = await conn.execute("SELECT job_id FROM warden.claim_jobs(%s, 'w', %s, '30 s')",
                                 [["t.lane"], width])
        claimed = await cur.fetchall()
        cur = await conn.execute("SELECT idx_scan FROM pg_stat_xact_user_tables "
                                 "WHERE relid = 'warden.policy_active'::regclass")
        row = await cur.fetchone()
        await conn.commit()
    finally:
        await conn.close()
    assert len(claimed) == width
    assert row is not None and row[0] < 5, f"{row[0]} probes of policy_active for one lane"


async def test_a_large_claim_records_each_runs_claims_in_job_order(
        db: Database, scheduler: Scheduler) -> None:
    """A claim of a run's 200 jobs (a workflow's most) and a few of another records one
    job.claimed per job, in job order within each run, in one gapless, verifying chain
    per run. The events are gathered in arrays: grown as one jsonb array, a claim of n
    jobs of a run copied that array n times (bench/README.md, session 18)."""
    width = 200
    steps = "\n".join(f"  s{i:03d}: {{type: job, topic: t.wide}}" for i in range(width))
    await support.store(db, f"id: wide\nname: wide\nversion: 1.0.0\nsteps:\n{steps}\n")
    await support.store(db, FAN.replace("t.fan", "t.wide").replace("id: fan", "id: fan2"))
    wide = await support.start(db, "wide")
    small = await support.start(db, "fan2")
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.wide"], n=width + 10)
    assert len(claimed) == width + 3
    for run, ids in ((wide, [f"s{i:03d}" for i in range(width)]), (small, list("abc"))):
        events = await support.events(db, run.run_id)
        assert [e.job_id for e in events if e.kind == "job.claimed"] == [
            f"{run.run_id}:{s}@1" for s in sorted(ids)]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert await _sql(db, "SELECT warden.verify_timeline(%s)", run.run_id) == [(True,)]


async def test_sql_worker_protocol_from_plain_sql(db_url: str, db: Database,
                                                  scheduler: Scheduler) -> None:
    """A worker in any language: nothing but the SQL functions."""
    await support.store(db, RETRYING)
    run = await support.start(db, "retrying")
    await support.settle(scheduler)
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT job_id, lease_token, attempt FROM warden.claim_jobs("
                           "ARRAY['t.work'], 'psql-worker', 10, interval '30 seconds')").fetchone()
        assert row is not None
        job_id, token, attempt = row
        assert job_id == f"{run.run_id}:work@1" and attempt == 1
        conn.execute("SELECT warden.heartbeat_job(%s, %s, interval '30 seconds', %s::jsonb)",
                     [job_id, token, '{"step": 1}'])
        conn.execute("SELECT warden.complete_job(%s, %s, '{\"n\": 1}'::jsonb)", [job_id, token])
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT warden.complete_job(%s, %s, '{}'::jsonb)", [job_id, token])
        assert caught.value.sqlstate == "WD001"


async def test_a_released_job_is_retried_at_once_without_spending_a_retry(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RETRYING.replace("max_attempts: 3", "max_attempts: 1"))
    run = await support.start(db, "retrying")
    job = await _one(db, scheduler)
    async with db.connection() as conn:
        await jobs_q.release(conn, job_id=job.job_id, lease_token=job.lease_token,
                             reason="worker w1 stopped")
        with pytest.raises(LeaseLost):  # released means gone: fenced like any lost lease
            await jobs_q.complete(conn, job_id=job.job_id, lease_token=job.lease_token,
                                  result={})
    again = await _one(db, scheduler)  # no backoff, although max_attempts was 1
    assert again.attempt == 2
    await support.complete(db, again)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.steps[0].status is StepStatus.SUCCEEDED
    assert detail.jobs[0].error["type"] == "Released"


FAN = """
id: fan
name: fan
version: 1.0.0
steps:
  a: {type: job, topic: t.fan}
  b: {type: job, topic: t.fan}
  c: {type: job, topic: t.fan}
"""


async def test_a_claim_hands_out_no_job_of_a_run_that_ended_meanwhile(
        db: Database, scheduler: Scheduler) -> None:
    """The run ended between dispatch and claim (here by hand, as a race would leave it):
    its jobs end cancelled with their events; the other run's jobs are claimed, each run's
    events appended once, in job order, with an intact chain."""
    await support.store(db, FAN)
    ended = await support.start(db, "fan")
    live = await support.start(db, "fan")
    await support.settle(scheduler)
    await _sql(db, "UPDATE warden.runs SET status = 'cancelled', finished_at = now() "
                   "WHERE run_id = %s", ended.run_id)
    claimed = await support.claim(db, ["t.fan"], n=10)
    assert sorted(j.job_id for j in claimed) == [f"{live.run_id}:{s}@1" for s in "abc"]
    statuses = await _sql(db, "SELECT status::text, error->>'type' FROM warden.jobs "
                              "WHERE run_id = %s ORDER BY job_id", ended.run_id)
    assert statuses == [("cancelled", "RunEnded")] * 3
    for run_id, kind in ((ended.run_id, "job.cancelled"), (live.run_id, "job.claimed")):
        events = [(e.kind, e.job_id) for e in await support.events(db, run_id)
                  if e.kind in ("job.cancelled", "job.claimed")]
        assert events == [(kind, f"{run_id}:{s}@1") for s in "abc"]
        assert await _sql(db, "SELECT warden.verify_timeline(%s)", run_id) == [(True,)]
