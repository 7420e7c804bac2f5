"""Recovery: the reconciler's repairs, run deadlines, unclaimed jobs, cancellation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.core.errors import JobCancelled, LeaseLost
from engine.daemons.reconciler import Reconciler
from engine.governance import approvals
from engine.runs import stopping
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database, sqlfiles
from engine.store import jobs as jobs_q
from tests import support

pytestmark = pytest.mark.anyio

CHAIN = """
id: chain
name: chain
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
  b: {type: job, topic: t.b, depends_on: [a]}
"""

MIXED = """
id: mixed
name: mixed
version: 1.0.0
steps:
  slow: {type: job, topic: t.slow}
  queued: {type: job, topic: t.queued}
  gate: {type: approval}
  after: {type: job, topic: t.after, depends_on: [gate, slow, queued]}
"""


def reconciler(svc: Services) -> Reconciler:
    return Reconciler(svc, dispatch_timeout=timedelta(milliseconds=100),
                      grace=timedelta(0))


async def sql(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def test_a_run_whose_steps_all_ended_is_woken_and_ends(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, CHAIN)
    run = await support.start(db, "chain")
    await support.settle(scheduler)
    # simulate the bug the reconciler exists for: state moved, nobody flagged the run
    await sql(db, "UPDATE warden.steps SET status = 'succeeded', finished_at = now()")
    await sql(db, "UPDATE warden.jobs SET status = 'cancelled', finished_at = now()")
    assert (await reconciler(svc).run_once()).flagged == 1
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED
    repaired = [e for e in await support.events(db, run.run_id)
                if e.kind == "reconciler.repaired"]
    assert [e.data["found"] for e in repaired] == ["all steps final but the run is open"]


async def test_a_ready_step_without_a_job_is_dispatched(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, CHAIN)
    run = await support.start(db, "chain")
    await sql(db, "UPDATE warden.runs SET needs_scheduling = false")  # the lost wake-up
    assert await support.claim(db, ["t.a"]) == []
    assert (await reconciler(svc).run_once()).flagged == 1
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.a"])
    assert job.run_id == run.run_id
    assert (await reconciler(svc).run_once()).total == 0  # nothing left to repair


async def test_a_stalled_running_step_gets_its_next_attempt(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, CHAIN.replace("t.a}", "t.a, retries: {max_attempts: 2}}"))
    run = await support.start(db, "chain")
    await support.settle(scheduler)
    [_claimed] = await support.claim(db, ["t.a"])
    # the attempt ended behind the engine's back: no retry was ever scheduled
    await sql(db, "UPDATE warden.jobs SET status = 'failed', finished_at = now()")
    assert (await reconciler(svc).run_once()).stalled == 1
    await support.settle(scheduler)
    [again] = await support.claim(db, ["t.a"])
    assert (again.attempt, again.run_id) == (2, run.run_id)


async def test_a_run_past_its_deadline_times_out_and_its_running_job_is_fenced(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, "timeout_ms: 3600000\n" + CHAIN)
    run = await support.start(db, "chain")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.a"])
    assert (await reconciler(svc).run_once()).deadlines == 0
    await support.advance_clock(db, 3601)
    assert (await reconciler(svc).run_once()).deadlines == 1
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.TIMED_OUT
    assert [s.status for s in detail.steps] == [StepStatus.TIMED_OUT, StepStatus.SKIPPED]
    assert [j.status for j in detail.jobs] == [JobStatus.TIMED_OUT]
    with pytest.raises(LeaseLost):
        await support.complete(db, job)
    kinds = await support.kinds(db, run.run_id)
    assert kinds[-3:] == ["job.timed_out", "run.timed_out", "reconciler.repaired"]


async def test_an_unclaimed_job_is_reported_once_and_announced_again(
        db: Database, svc: Services, scheduler: Scheduler, db_url: str) -> None:
    await support.store(db, CHAIN)
    run = await support.start(db, "chain")
    await support.settle(scheduler)
    await support.advance_clock(db, 0.2)  # past the reconciler's dispatch timeout (100 ms)
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN warden_jobs")
    assert (await reconciler(svc).run_once()).unclaimed == 1
    topics = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
    await listener.close()
    assert topics == ["t.a"]
    assert (await reconciler(svc).run_once()).unclaimed == 0  # once
    [job] = await support.claim(db, ["t.a"])  # never lost
    assert job.run_id == run.run_id


async def test_three_reconcilers_at_once_repair_each_run_exactly_once(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, CHAIN)
    runs = [await support.start(db, "chain") for _ in range(20)]
    await sql(db, "UPDATE warden.runs SET needs_scheduling = false")
    results = await asyncio.gather(*(reconciler(svc).run_once() for _ in range(3)))
    assert sum(r.flagged for r in results) == len(runs)
    [(events,)] = await sql(db, "SELECT count(*) FROM warden.timeline "
                                "WHERE kind = 'reconciler.repaired'")
    assert events == len(runs)


async def test_cancel_ends_pending_running_and_blocked_work(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    await support.store(db, MIXED)
    run = await support.start(db, "mixed", by="alice")
    await support.settle(scheduler)
    [running] = await support.claim(db, ["t.slow"])
    ended = await stopping.cancel(db, tenant_id="default", run_id=run.run_id, by="olga",
                                  reason="wrong incident")
    assert ended.status is RunStatus.CANCELLED
    detail = await support.detail(db, run.run_id)
    assert {j.step_id: j.status for j in detail.jobs} == {
        "slow": JobStatus.CANCELLED, "queued": JobStatus.CANCELLED}
    assert {s.status for s in detail.steps} == {StepStatus.CANCELLED}
    assert [a.status.value for a in detail.approvals] == ["expired"]
    async with db.connection() as conn:
        with pytest.raises(JobCancelled):  # the running job learns it at its next heartbeat
            await jobs_q.heartbeat(conn, job_id=running.job_id,
                                   lease_token=running.lease_token,
                                   extend=timedelta(seconds=30))
    with pytest.raises(JobCancelled):  # and its late completion is fenced
        await support.complete(db, running)
    with pytest.raises(Exception, match="already"):
        await approvals.decide(db, tenant_id="default",
                               approval_id=detail.approvals[0].approval_id, approve=True,
                               principal="bob")
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.CANCELLED
    assert await support.claim(db, ["t.queued", "t.after"]) == []


async def _history(db: Database, n: int) -> None:
    """``n`` finished runs of CHAIN written directly, then the statistics taken: the
    planner's view of a database whose runs have all ended (as after a drain), where no
    run is open and none has a deadline."""
    await sql(db, """
        INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, status,
                                 request_digest, created_by, started_at, finished_at,
                                 needs_scheduling)
        SELECT 'default', 'chain', '1.0.0', 'succeeded', 'history', 'test', now(), now(),
               false
          FROM generate_series(1, %s)""", n)
    await sql(db, "ANALYZE warden.runs")
    await sql(db, "ANALYZE warden.steps")


@pytest.mark.parametrize("name", ["reconcile_flag_stuck_runs", "reconcile_stalled_steps"])
async def test_a_sweep_probes_the_steps_of_each_open_run(
        db: Database, scheduler: Scheduler, db_url: str, name: str) -> None:
    """The sweeps find the open runs of each tenant through runs_by_status and read their
    steps by key. Their checks as ORed EXISTS were planned as hashes built from every step
    ever run, and the stalled-step filter as a walk of every step: 0.2-0.4 s a pass on a
    million steps, growing with history (bench/README.md, session 11)."""
    await support.store(db, CHAIN)
    for _ in range(3):
        await support.start(db, "chain")
    await support.settle(scheduler)
    await _history(db, 2000)
    plan = await support.generic_plan(db_url, name, {"grace": "30 seconds", "limit": "100"})
    # nothing hashed or scanned whole: a hash is built from every row of its table, and
    # with sequential scans off a Seq Scan means no keyed path was left (PostgreSQL 17
    # hashed an EXISTS over step_items that PostgreSQL 15 probed per step)
    assert "hashed SubPlan" not in plan, plan
    assert "Hash" not in plan and "Seq Scan" not in plan, plan
    lines = plan.splitlines()
    scans = [i for i, line in enumerate(lines) if " on steps " in line]
    assert scans, plan
    for i in scans:
        assert "Index Cond" in lines[i + 1] and ".run_id" in lines[i + 1], plan
    [runs] = [i for i, line in enumerate(lines)
              if " on runs r" in line and "Index Cond" in lines[i + 1]
              and "status = ANY" in lines[i + 1]]
    assert "runs_by_status" in lines[runs] and "tenant_id = ANY" in lines[runs + 1], plan


async def test_the_sweeps_know_every_open_status(db: Database) -> None:
    """The sweeps name the open statuses (the ones runs_finished_iff_final leaves without
    finished_at); a status added to the enum must be added there too."""
    query = sqlfiles.get("reconcile_flag_stuck_runs").sql
    stalled = sqlfiles.get("reconcile_stalled_steps").sql
    listed = "r.status IN (" + ", ".join(f"'{s.value}'" for s in RunStatus
                                         if not s.is_final) + ")"
    assert listed in query and listed in stalled
    [(values,)] = await sql(db, "SELECT enum_range(NULL::warden.run_status)::text[]")
    assert sorted(values) == sorted(s.value for s in RunStatus)


async def test_the_sweeps_run_once_per_sweep_interval(
        db: Database, svc: Services, scheduler: Scheduler,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The serve loop asks ``sweep_due`` each pass: the first pass sweeps, the next ones
    within the interval check deadlines and unclaimed jobs only."""
    clock = [1000.0]
    monkeypatch.setattr("engine.process.lookback.time.monotonic", lambda: clock[0])
    rec = Reconciler(svc, grace=timedelta(0), sweep_interval=timedelta(minutes=1))
    await support.store(db, CHAIN)
    await support.start(db, "chain")
    await sql(db, "UPDATE warden.runs SET needs_scheduling = false")  # a lost wake-up
    assert (await rec.run_once(sweep=rec.sweep_due())).flagged == 1
    await support.settle(scheduler)
    await support.start(db, "chain")
    await sql(db, "UPDATE warden.runs SET needs_scheduling = false")
    clock[0] += 59
    assert (await rec.run_once(sweep=rec.sweep_due())).flagged == 0
    clock[0] += 1
    assert (await rec.run_once(sweep=rec.sweep_due())).flagged == 1


async def test_the_deadline_check_reads_only_runs_with_a_deadline(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """The 10 s deadline check walks runs_open_deadline (open runs that have a deadline).
    With statistics taken while no run was open and none had a deadline, the planner took
    the index of all open runs there was (runs_open, since dropped) and sorted: 0.45 s a
    pass six minutes into an old snapshot, which keeps an entry for every run open since
    (bench/README.md, session 11)."""
    await support.store(db, CHAIN)
    await _history(db, 2000)
    await support.start(db, "chain")
    plan = await support.generic_plan(db_url, "reconcile_runs_past_deadline", {"limit": "100"})
    assert "runs_open_deadline" in plan, plan
