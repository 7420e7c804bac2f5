"""warden.complete_jobs and the worker's group commit (engine.worker.completer)."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import uuid4

import psycopg
import pytest
from psycopg.types.json import Jsonb

from engine.core.enums import JobStatus, Outcome, RunStatus, StepStatus
from engine.core.errors import WardenError
from engine.definitions import dag
from engine.governance.policy import Verdict
from engine.process.metrics import REGISTRY
from engine.runs import stopping
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store.connection import connect
from engine.store.jobs import Completion, encode_result
from engine.store.scope import ACROSS_TENANTS, scoped
from engine.worker.completer import Completer
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

OK_1 = encode_result({"ok": 1})
OK_2 = encode_result({"ok": 2})

FAN = """
id: fan
name: fan
version: 1.0.0
steps:
  a: {type: job, topic: t.fan}
  b: {type: job, topic: t.fan}
  c: {type: job, topic: t.fan}
  join: {type: job, topic: t.join, depends_on: [a, b, c]}
"""


async def _sql(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def _two_fanned_out_runs(db: Database, scheduler: Scheduler) -> list[Any]:
    await support.store(db, FAN)
    await support.start(db, "fan")
    await support.start(db, "fan")
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.fan"], n=10)
    assert len(claimed) == 6
    return claimed


async def test_a_batch_across_runs_completes_every_job_its_steps_and_wakes_each_run_once(
        db: Database, scheduler: Scheduler) -> None:
    claimed = await _two_fanned_out_runs(db, scheduler)
    await _sql(db, "UPDATE warden.runs SET needs_scheduling = false")
    async with db.connection() as conn:
        outcomes = await jobs_q.complete_many(conn, [
            Completion.of(j.job_id, j.lease_token, {"done": j.job_id}) for j in claimed])
    assert outcomes == {j.job_id: Outcome.COMPLETED for j in claimed}
    rows = await _sql(db, "SELECT j.status, s.status, s.output = j.result, j.finished_at "
                          "IS NOT NULL FROM warden.jobs j JOIN warden.steps s "
                          "USING (tenant_id, run_id, step_id) WHERE j.topic = 't.fan'")
    assert rows == [(JobStatus.SUCCEEDED, StepStatus.SUCCEEDED, True, True)] * 6
    assert await _sql(db, "SELECT count(*) FROM warden.runs WHERE needs_scheduling") == [(2,)]
    # one job.succeeded per job, chained after the claim events, in job order per run
    for run_id in {j.run_id for j in claimed}:
        succeeded = [e.job_id for e in await support.events(db, run_id)
                     if e.kind == "job.succeeded"]
        assert succeeded == sorted(j.job_id for j in claimed if j.run_id == run_id)
        assert (await _sql(db, "SELECT warden.verify_timeline(%s)", run_id)) == [(True,)]
    # and the runs move on: the join steps are dispatched, then the runs finish
    await support.settle(scheduler)
    joins = await support.claim(db, ["t.join"], n=10)
    assert len(joins) == 2
    for job in joins:
        await support.complete(db, job)
    await support.settle(scheduler)
    assert await _sql(db, "SELECT DISTINCT status FROM warden.runs") == [(RunStatus.SUCCEEDED,)]


async def test_fenced_jobs_in_a_batch_change_nothing_and_do_not_sink_the_others(
        db: Database, scheduler: Scheduler) -> None:
    claimed = await _two_fanned_out_runs(db, scheduler)
    run_a, run_b = sorted({j.run_id for j in claimed})
    good, stale, *_ = [j for j in claimed if j.run_id == run_a]
    cancelled = next(j for j in claimed if j.run_id == run_b)
    cancelled_run = run_b
    await stopping.cancel(db, tenant_id="default", run_id=cancelled_run, by="op",
                          reason="test")
    before = await _sql(db, "SELECT job_id, status, result FROM warden.jobs "
                            "WHERE job_id IN (%s, %s) ORDER BY job_id",
                        stale.job_id, cancelled.job_id)
    async with db.connection() as conn:
        outcomes = await jobs_q.complete_many(conn, [
            Completion.of(good.job_id, good.lease_token, {"ok": 1}),
            Completion.of(stale.job_id, uuid4(), {"late": 1}),
            Completion.of(cancelled.job_id, cancelled.lease_token, {"late": 1}),
            Completion.of("no-such-job", uuid4(), {}),
        ])
    assert outcomes == {good.job_id: Outcome.COMPLETED, stale.job_id: Outcome.LEASE_LOST,
                        cancelled.job_id: Outcome.CANCELLED,
                        "no-such-job": Outcome.NOT_FOUND}
    after = await _sql(db, "SELECT job_id, status, result FROM warden.jobs "
                           "WHERE job_id IN (%s, %s) ORDER BY job_id",
                       stale.job_id, cancelled.job_id)
    assert before == after
    assert await _sql(db, "SELECT status FROM warden.jobs WHERE job_id = %s",
                      good.job_id) == [(JobStatus.SUCCEEDED,)]
    # a completed job cannot be completed twice, even by its own lease holder
    async with db.connection() as conn:
        again = await jobs_q.complete_many(conn, [Completion.of(good.job_id, good.lease_token,
                                                             {"twice": 1})])
    assert again == {good.job_id: Outcome.LEASE_LOST}


async def test_arrays_of_different_lengths_are_refused(db: Database) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="same length"):
        await _sql(db, "SELECT * FROM warden.complete_jobs(ARRAY['a','b'], "
                       "ARRAY[gen_random_uuid()], ARRAY['{}'::jsonb])")


async def test_each_job_takes_its_own_token_and_result_whatever_the_batchs_order(
        db: Database, scheduler: Scheduler) -> None:
    """Tokens and results are matched to their jobs by id (each id's position in the
    arguments), not by the order the rows are found in: a batch given in reverse order,
    with a stale token in the middle, a NULL id and an unknown id, stores every result on
    its own job and fences only the stale one."""
    claimed = sorted(await _two_fanned_out_runs(db, scheduler), key=lambda j: j.job_id)
    stale = claimed[2]
    batch = [(j.job_id, uuid4() if j is stale else j.lease_token, {"mine": j.job_id})
             for j in reversed(claimed)]
    batch.insert(3, (None, uuid4(), {"nobody": 1}))
    batch.append(("no-such-job", uuid4(), {"nobody": 2}))
    rows = await _sql(db, "SELECT job_id, outcome FROM warden.complete_jobs("
                          "%s::text[], %s::uuid[], %s::jsonb[])",
                      [b[0] for b in batch], [b[1] for b in batch],
                      [Jsonb(b[2]) for b in batch])
    assert rows == [(b[0], "not_found" if b[0] in (None, "no-such-job") else
                     "lease_lost" if b[0] == stale.job_id else "completed") for b in batch]
    stored = dict(await _sql(db, "SELECT job_id, result FROM warden.jobs "
                                 "WHERE status = 'succeeded'"))
    assert stored == {j.job_id: {"mine": j.job_id} for j in claimed if j is not stale}


async def test_a_batch_reads_the_database_time_once_not_per_job(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """The fence of a batch compares each lease with the time complete_jobs read at its
    start (warden.lease_held_at); through warden.lease_held it called warden.now(), a
    PL/pgSQL function, once more per job."""
    claimed = await _two_fanned_out_runs(db, scheduler)
    conn = await connect(db_url, autocommit=False)  # one transaction: its function counts
    try:
        await conn.execute("SET LOCAL track_functions = 'all'")
        outcomes = await jobs_q.complete_many(conn, [Completion.of(j.job_id, j.lease_token, {})
                                                     for j in claimed])
        cur = await conn.execute("SELECT pg_stat_get_xact_function_calls("
                                 "'warden.now()'::regprocedure)")
        row = await cur.fetchone()
        await conn.commit()
    finally:
        await conn.close()
    assert set(outcomes.values()) == {Outcome.COMPLETED} and len(outcomes) == len(claimed)
    assert row is not None and row[0] is not None and row[0] < len(claimed), row


async def test_the_completer_groups_concurrent_completions_and_isolates_a_refused_result(
        db: Database, scheduler: Scheduler) -> None:
    claimed = await _two_fanned_out_runs(db, scheduler)
    completer = Completer(db)
    task = asyncio.create_task(completer.run())
    bad, *good = claimed
    try:
        first = await asyncio.gather(*(completer.complete(j.job_id, j.lease_token, OK_1)
                                       for j in good[:3]))
        assert first == [Outcome.COMPLETED] * 3
        assert completer.flushes == 1  # three completions, one transaction
        results = await asyncio.gather(
            completer.complete(bad.job_id, bad.lease_token,
                               encode_result({"text": "nul \u0000 byte"})),
            *(completer.complete(j.job_id, j.lease_token, OK_2) for j in good[3:]),
            return_exceptions=True)
    finally:
        completer.close()
        await asyncio.wait_for(task, 10)
    assert isinstance(results[0], WardenError)
    assert results[1:] == [Outcome.COMPLETED] * len(good[3:])
    assert await _sql(db, "SELECT status FROM warden.jobs WHERE job_id = %s",
                      bad.job_id) == [(JobStatus.RUNNING,)]
    assert await _sql(db, "SELECT count(*) FROM warden.jobs WHERE status = 'succeeded'") \
        == [(len(good),)]


async def test_a_batch_finds_its_jobs_by_index_however_large_the_table(
        db: Database, scheduler: Scheduler) -> None:
    """It scanned all of warden.jobs once per batch (a hash join the planner preferred)."""
    claimed = await _two_fanned_out_runs(db, scheduler)
    await _sql(db, """
        INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic, status,
                                 started_at, finished_at)
        SELECT j.tenant_id, j.run_id::text || ':' || j.step_id || '@' || n, j.run_id,
               j.step_id, n, j.topic, 'succeeded', now(), now()
          FROM warden.jobs j, generate_series(2, 2001) AS n""")
    # a connection of its own: a backend's pending statistics can still hold counts of
    # its earlier transactions
    conn = await connect(db.url, autocommit=False)
    try:
        outcomes = await jobs_q.complete_many(conn, [
            Completion.of(j.job_id, j.lease_token, {"ok": 1}) for j in claimed]
            + [Completion.of("no-such-job", uuid4(), {})])
        cur = await conn.execute("SELECT seq_scan FROM pg_stat_xact_user_tables "
                                 "WHERE relid = 'warden.jobs'::regclass")
        row = await cur.fetchone()
        await conn.commit()
    finally:
        await conn.close()
    assert row is not None and row[0] == 0, f"{row} sequential scans of warden.jobs"
    assert list(outcomes.values()).count(Outcome.COMPLETED) == len(claimed)
    assert outcomes["no-such-job"] is Outcome.NOT_FOUND


async def _flagged(db: Database, run_id: Any) -> bool:
    rows = await _sql(db, "SELECT needs_scheduling FROM warden.runs WHERE run_id = %s", run_id)
    return bool(rows[0][0])


async def _complete_unflagged(db: Database, *jobs: Any) -> None:
    await _sql(db, "UPDATE warden.runs SET needs_scheduling = false")
    async with db.connection() as conn:
        await jobs_q.complete_many(conn, [Completion.of(j.job_id, j.lease_token, {}) for j in jobs])


async def test_a_completion_wakes_its_run_only_when_the_scheduler_has_something_to_do(
        db: Database, scheduler: Scheduler) -> None:
    """A fan-out branch ending while its siblings still run changes nothing the scheduler
    would decide; the last one makes the join ready (docs/design.md#scale-path)."""
    await support.store(db, FAN)
    run = await support.start(db, "fan")
    await support.settle(scheduler)
    a, b, c = sorted(await support.claim(db, ["t.fan"], n=10), key=lambda j: j.step_id)
    await _complete_unflagged(db, a)
    assert not await _flagged(db, run.run_id)
    await _complete_unflagged(db, b)
    assert not await _flagged(db, run.run_id)
    await _complete_unflagged(db, c)  # the join's dependencies are all final
    assert await _flagged(db, run.run_id)
    await support.settle(scheduler)
    (join,) = await support.claim(db, ["t.join"], n=10)
    await _complete_unflagged(db, join)  # the last step: the run ends here, unflagged
    assert not await _flagged(db, run.run_id)
    ended = (await support.detail(db, run.run_id)).run
    assert ended.status is RunStatus.SUCCEEDED and await support.end_unobserved(db, run.run_id)


BESIDE_AN_APPROVAL = """
id: beside
name: beside
version: 1.0.0
steps:
  work: {type: job, topic: t.beside}
  gate: {type: approval}
"""


async def test_the_last_running_step_ending_wakes_a_run_left_waiting_on_an_approval(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, BESIDE_AN_APPROVAL)
    run = await support.start(db, "beside")
    await support.settle(scheduler)
    (work,) = await support.claim(db, ["t.beside"], n=10)
    await _complete_unflagged(db, work)
    assert await _flagged(db, run.run_id)
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.WAITING


async def test_two_completers_ending_a_runs_last_branches_at_once_still_wake_it(
        db: Database, scheduler: Scheduler) -> None:
    """Each sees the other's branch still running in its own snapshot unless the run lock
    orders them: the second one in must read the first one's committed step."""
    await support.store(db, FAN)
    run = await support.start(db, "fan")
    await support.settle(scheduler)
    a, b, c = sorted(await support.claim(db, ["t.fan"], n=10), key=lambda j: j.step_id)
    await _complete_unflagged(db, a)
    first = await connect(db.url, autocommit=False)
    second = await connect(db.url, autocommit=False)
    try:
        await jobs_q.complete_many(first, [Completion.of(b.job_id, b.lease_token, {})])
        # c's jobs UPDATE runs now; its append waits for the run row first holds
        racing = asyncio.create_task(
            jobs_q.complete_many(second, [Completion.of(c.job_id, c.lease_token, {})]))
        await asyncio.sleep(0.3)
        assert not racing.done()
        await first.commit()
        assert (await asyncio.wait_for(racing, 10)) == {c.job_id: Outcome.COMPLETED}
        await second.commit()
    finally:
        await first.close()
        await second.close()
    assert await _flagged(db, run.run_id)


ONE = """
id: one
name: one
version: 1.0.0
steps:
  a: {type: job, topic: t.one}
"""

MAPPED = """
id: mapped
name: mapped
version: 1.0.0
steps:
  a: {type: job, topic: t.mapped}
output:
  answer: "${steps.a.output.n}"
"""


def _ended_count() -> float:
    return REGISTRY.get_sample_value("warden_run_duration_seconds_count",
                                     {"status": "succeeded"}) or 0.0


async def test_the_completion_of_a_plain_runs_last_step_ends_the_run_in_its_transaction(
        db: Database, scheduler: Scheduler) -> None:
    """No scheduler hop to end it, no flag and no wake-up: the observer records the end,
    once."""
    await support.store(db, ONE)
    run = await support.start(db, "one")
    await support.settle(scheduler)
    (job,) = await support.claim(db, ["t.one"])
    await _complete_unflagged(db, job)
    ended = (await support.detail(db, run.run_id)).run
    assert ended.status is RunStatus.SUCCEEDED and ended.finished_at is not None
    assert ended.output == {"a": {}}
    assert await support.end_unobserved(db, run.run_id) and not ended.needs_scheduling
    events = await support.events(db, run.run_id)
    assert [(e.kind, e.actor) for e in events[-2:]] == [("job.succeeded", "w1"),
                                                      ("run.succeeded", "scheduler")]
    assert events[-1].data == {"status": "succeeded"}
    assert await _sql(db, "SELECT warden.verify_timeline(%s)", run.run_id) == [(True,)]
    before = _ended_count()
    assert await scheduler.run_once() == 0  # nothing for a pass
    assert _ended_count() == before
    assert await scheduler.observe_ends() == 1
    assert _ended_count() == before + 1
    observed = (await support.detail(db, run.run_id)).run
    assert not await support.end_unobserved(db, run.run_id) and not observed.needs_scheduling
    assert observed.status is RunStatus.SUCCEEDED
    assert len(await support.events(db, run.run_id)) == len(events)  # nothing more written
    assert await scheduler.observe_ends() == 0  # observed once
    await _sql(db, "UPDATE warden.runs SET needs_scheduling = true")  # woken again: no recount
    await support.settle(scheduler)
    assert _ended_count() == before + 1


async def test_a_batch_writes_each_of_its_runs_once_head_end_and_flag_together(
        db: Database, scheduler: Scheduler) -> None:
    """The timeline head moved in the same update as the run's end or wake-up: each run
    row of a batch takes one new version, not one for the head and one for the rest
    (docs/design.md#the-timeline). Three runs: one that ends, one woken (its join is
    ready), one that only takes its head (a branch ends beside a running one)."""
    await support.store(db, FAN)
    await support.store(db, ONE)
    woken = await support.start(db, "fan")
    head_only = await support.start(db, "fan")
    ending = await support.start(db, "one")
    await support.settle(scheduler)
    fanned = await support.claim(db, ["t.fan"], n=10)
    (one,) = await support.claim(db, ["t.one"])
    batch = [j for j in fanned if j.run_id == woken.run_id] + [one] + [
        next(j for j in fanned if j.run_id == head_only.run_id)]
    await _sql(db, "UPDATE warden.runs SET needs_scheduling = false")
    conn = await connect(db.url, autocommit=False)  # its own backend: see the test above
    try:
        outcomes = await jobs_q.complete_many(
            conn, [Completion.of(j.job_id, j.lease_token, {}) for j in batch])
        cur = await conn.execute("SELECT n_tup_upd FROM pg_stat_xact_user_tables "
                                 "WHERE relid = 'warden.runs'::regclass")
        row = await cur.fetchone()
        await conn.commit()
    finally:
        await conn.close()
    assert list(outcomes.values()) == [Outcome.COMPLETED] * 5
    assert row == (3,), f"{row} updates of warden.runs for a batch of 3 runs"
    assert await _flagged(db, woken.run_id) and not await _flagged(db, head_only.run_id)
    ended = (await support.detail(db, ending.run_id)).run
    assert ended.status is RunStatus.SUCCEEDED
    assert await support.end_unobserved(db, ending.run_id)
    for run in (woken, head_only, ending):
        rows = await _sql(db, "SELECT r.timeline_seq = (SELECT max(t.seq) FROM warden.timeline t "
                              "WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id), "
                              "warden.verify_timeline(r.run_id) FROM warden.runs r "
                              "WHERE r.run_id = %s", run.run_id)
        assert rows == [(True, True)]
    # the heads moved: the next append chains on them, and the chain still verifies
    await support.settle(scheduler)
    assert await _sql(db, "SELECT warden.verify_timeline(%s)", woken.run_id) == [(True,)]


async def test_an_end_wakes_no_scheduler_but_a_flagged_run_does(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """A completion that only ends its run sends nothing on warden_scheduler (the
    observer polls for ends); one that leaves the scheduler something to decide does."""
    await support.store(db, ONE)
    await support.store(db, FAN)
    one = await support.start(db, "one")
    fan = await support.start(db, "fan")
    await support.settle(scheduler)
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        await listener.execute("LISTEN warden_scheduler")
        (job,) = await support.claim(db, ["t.one"])
        await _complete_unflagged(db, job)
        assert (await support.detail(db, one.run_id)).run.status is RunStatus.SUCCEEDED
        assert [n async for n in listener.notifies(timeout=0.5)] == []
        branches = await support.claim(db, ["t.fan"], n=3)
        await _complete_unflagged(db, *branches)  # the join is ready: the scheduler's
        assert await _flagged(db, fan.run_id)
        assert len([n async for n in listener.notifies(timeout=5, stop_after=1)]) == 1
    finally:
        await listener.close()


async def test_each_end_is_observed_once_by_concurrent_observers_and_passes(
        db: Database, scheduler: Scheduler) -> None:
    """Two observers and a scheduler pass over the same ended runs (one of them flagged
    for another reason) record each end exactly once: the marks are taken SKIP LOCKED
    and cleared in the statement that takes them."""
    await support.store(db, ONE)
    runs = [await support.start(db, "one") for _ in range(12)]
    await support.settle(scheduler)
    jobs = await support.claim(db, ["t.one"], n=12)
    await _complete_unflagged(db, *jobs)
    assert await _sql(db, "SELECT count(*) FROM warden.run_ends") == [(12,)]
    await _sql(db, "UPDATE warden.runs SET needs_scheduling = true WHERE run_id = %s",
               runs[0].run_id)
    before = _ended_count()
    other = Scheduler(support.services(db))
    await asyncio.gather(scheduler.observe_ends(limit=5), other.observe_ends(limit=5),
                         scheduler.run_once())
    while await scheduler.observe_ends(limit=5):
        pass
    await support.settle(scheduler)
    assert _ended_count() == before + 12
    assert await _sql(db, "SELECT (SELECT count(*) FROM warden.run_ends), "
                          "(SELECT count(*) FROM warden.runs WHERE needs_scheduling)") == [(0, 0)]


async def test_the_observer_looks_up_its_ends_once_and_deletes_them_by_ctid(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """runs_observe_ends' generic plan: the lookup of the oldest ends (run_ends_by_time,
    LIMIT, SKIP LOCKED) runs once, as an InitPlan, and the rows it took are deleted by
    ctid. Written as a join to that lookup, the planner put it inside a nested loop over
    run_ends and ran it once per row: 5 s a call under an old snapshot."""
    await support.store(db, ONE)
    for _ in range(3):
        await support.start(db, "one")
    await support.settle(scheduler)
    await _complete_unflagged(db, *await support.claim(db, ["t.one"], n=3))
    await _sql(db, "ANALYZE warden.run_ends")
    plan = await support.generic_plan(db_url, "runs_observe_ends",
                                      {"lookback": "10 seconds", "limit": "500"})
    lines = plan.splitlines()
    lookups = [i for i, line in enumerate(lines) if "run_ends_by_time" in line]
    assert len(lookups) == 1, plan
    assert any("InitPlan" in line for line in lines[:lookups[0]]), plan
    assert any("Tid Scan on run_ends e" in line for line in lines), plan
    assert "Nested Loop" not in "\n".join(lines[:lookups[0]]).split("CTE taken")[-1], plan


async def test_the_observer_runs_on_the_engine_roles_privileges(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    """`warden serve` logs in as a warden_engine member: taking the marks (row-level
    security, the grant to delete from warden.run_ends) needs nothing more, across tenants as
    the serve's loops run, and a scope of another tenant sees none of them."""
    await support.store(db, ONE)
    run = await support.start(db, "one")
    await support.settle(scheduler)
    (job,) = await support.claim(db, ["t.one"])
    await _complete_unflagged(db, job)
    before = _ended_count()
    async with Database(as_role(db_url, login_roles.engine), max_size=2) as engine_db:
        observer = Scheduler(Services.create(engine_db, policy_default=Verdict.ALLOW))
        with scoped("another-tenant"):
            assert await observer.observe_ends() == 0
        with scoped(ACROSS_TENANTS):
            assert await observer.observe_ends() == 1
    assert _ended_count() == before + 1
    assert not await support.end_unobserved(db, run.run_id)


async def test_the_ends_queue_is_fenced_by_tenant_and_role(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    """warden.run_ends is written by warden.complete_jobs alone: the engine may take an end
    of a tenant in its scope and nothing more (no forged end, no end moved to another run,
    no other tenant's end seen or taken), a worker or an auditor not at all. (Retention
    deleting a run with its end: tests/db/test_retention.py.)"""
    await support.store(db, ONE)
    run = await support.start(db, "one")
    await support.settle(scheduler)
    (job,) = await support.claim(db, ["t.one"])
    await _complete_unflagged(db, job)
    other = await support.start(db, "one")  # not ended: no row

    def refused(role: str, statement: str, *params: Any) -> None:
        with psycopg.connect(as_role(db_url, role), autocommit=True) as conn:
            conn.execute("SELECT set_config('warden.tenant', '*', false)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, params)

    forge = ("INSERT INTO warden.run_ends (tenant_id, run_id, finished_at) "
             "VALUES ('default', %s, now())")
    move = "UPDATE warden.run_ends SET run_id = %s"
    for role in (login_roles.engine, login_roles.worker_a, login_roles.auditor):
        refused(role, forge, other.run_id)
        refused(role, move, other.run_id)
    for role in (login_roles.worker_a, login_roles.auditor):
        refused(role, "DELETE FROM warden.run_ends")
    refused(login_roles.worker_a, "SELECT * FROM warden.run_ends")
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        conn.execute("SELECT set_config('warden.tenant', 'another-tenant', false)")
        assert conn.execute("SELECT count(*) FROM warden.run_ends").fetchone() == (0,)
        assert conn.execute("DELETE FROM warden.run_ends").rowcount == 0
        # the one column it may update (FOR UPDATE asks for it) is fenced the same way
        assert conn.execute("UPDATE warden.run_ends SET finished_at = now()").rowcount == 0
    assert await support.end_unobserved(db, run.run_id)


async def _left_to_the_scheduler(db: Database, run_id: Any) -> None:
    left = (await support.detail(db, run_id)).run
    assert left.status is RunStatus.RUNNING and left.needs_scheduling
    assert not await support.end_unobserved(db, run_id)


async def test_a_run_with_an_output_mapping_or_a_failed_step_is_left_to_the_scheduler(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, MAPPED)
    await support.store(db, FAN.replace("depends_on: [a, b, c]",
                                        "depends_on: [a, b, c], trigger: all_done"))
    mapped = await support.start(db, "mapped")
    fan = await support.start(db, "fan")
    await support.settle(scheduler)
    (job,) = await support.claim(db, ["t.mapped"])
    await _sql(db, "UPDATE warden.runs SET needs_scheduling = false")
    await support.complete(db, job, {"n": 1})  # its output is the mapping's, in Python
    await _left_to_the_scheduler(db, mapped.run_id)
    a, b, c = sorted(await support.claim(db, ["t.fan"], n=10), key=lambda j: j.step_id)
    await support.fail(db, a, retryable=False)
    await support.complete(db, b)
    await support.complete(db, c)
    await support.settle(scheduler)
    (join,) = await support.claim(db, ["t.join"])
    await _complete_unflagged(db, join)  # every step final, one of them failed
    await _left_to_the_scheduler(db, fan.run_id)
    await support.settle(scheduler)
    assert (await support.detail(db, mapped.run_id)).run.output == {"answer": 1}
    assert (await support.detail(db, fan.run_id)).run.status is RunStatus.FAILED


BRANCHES = """
id: branches
name: branches
version: 1.0.0
steps:
  a: {type: job, topic: t.br}
  b: {type: job, topic: t.br, depends_on: [a]}
  c: {type: job, topic: t.br, depends_on: [a]}
  skipped:
    type: job
    topic: t.br
    depends_on: [a]
    when: "steps.a.output.n > 5"
"""


async def test_a_run_ended_by_a_completion_carries_the_output_the_scheduler_would_write(
        db: Database, scheduler: Scheduler) -> None:
    """The sink steps' outputs (engine/definitions/dag.py sink_steps), a skipped sink and a
    step others depend on left out, exactly as the scheduler's _settle builds it."""
    await support.store(db, BRANCHES)
    run = await support.start(db, "branches")
    await support.settle(scheduler)
    (a,) = await support.claim(db, ["t.br"])
    await support.complete(db, a, {"n": 1})
    await support.settle(scheduler)  # b and c dispatched, `skipped` skipped
    b, c = sorted(await support.claim(db, ["t.br"], n=10), key=lambda j: j.step_id)
    await support.complete(db, b, {"from": "b"})
    await _complete_unflagged(db, c)
    ended = (await support.detail(db, run.run_id)).run
    assert ended.status is RunStatus.SUCCEEDED and await support.end_unobserved(db, run.run_id)
    async with db.connection() as conn:
        workflow = await support.services(db).definitions.get(conn, "default", "branches",
                                                              "1.0.0")
    steps = {s.step_id: s for s in (await support.detail(db, run.run_id)).steps}
    assert steps["skipped"].status is StepStatus.SKIPPED
    assert ended.output == {sid: steps[sid].output for sid in dag.sink_steps(workflow)
                            if steps[sid].status is StepStatus.SUCCEEDED}
    assert ended.output == {"b": {"from": "b"}, "c": {}}


async def test_a_result_is_stored_as_the_json_it_was_encoded_to(
        db: Database, scheduler: Scheduler) -> None:
    """A result is encoded once (jobs.encode_result, by the worker) and the batch sends
    that text as it is: the job and its step hold the value the handler returned."""
    claimed = await _two_fanned_out_runs(db, scheduler)
    value = {"é": [1, 2.5, None, True], "big": 2**62, "nested": {"s": "a\"b\\c\n"}}
    async with db.connection() as conn:
        outcomes = await jobs_q.complete_many(conn, [
            Completion.of(claimed[0].job_id, claimed[0].lease_token, value)])
    assert outcomes == {claimed[0].job_id: Outcome.COMPLETED}
    rows = await _sql(db, "SELECT j.result, s.output FROM warden.jobs j JOIN warden.steps s "
                          "USING (tenant_id, run_id, step_id) WHERE j.job_id = %s",
                      claimed[0].job_id)
    assert rows == [(value, value)]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"x": {1, 2}}, object()])
def test_what_json_cannot_hold_is_refused_when_encoded(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_result(value)


async def test_encoded_text_that_is_not_json_is_refused_and_nothing_is_stored(
        db: Database, scheduler: Scheduler) -> None:
    claimed = await _two_fanned_out_runs(db, scheduler)
    job = claimed[0]
    # the text is sent as is: the database is the last check (a worker never sends this:
    # it encodes with allow_nan=False, tests/db/test_workers.py)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        async with db.connection() as conn:
            await jobs_q.complete_many(conn, [
                Completion(job.job_id, job.lease_token, '{"x": NaN}')])
    assert await _sql(db, "SELECT status, result FROM warden.jobs WHERE job_id = %s",
                      job.job_id) == [(JobStatus.RUNNING, None)]


async def test_an_error_the_store_does_not_translate_sinks_neither_the_batch_nor_the_completer(
        db: Database, scheduler: Scheduler) -> None:
    """One completion whose write fails with an error the store leaves untranslated (here
    text that is not JSON, which no worker sends) gets that error; the others of its batch
    complete, and so do completions handed in afterwards. The loop once ended on such an
    error, and every later completion waited on it forever."""
    claimed = await _two_fanned_out_runs(db, scheduler)
    completer = Completer(db)
    task = asyncio.create_task(completer.run())
    bad, *good = claimed
    try:
        results = await asyncio.gather(
            completer.complete(bad.job_id, bad.lease_token, '{"x": NaN}'),
            *(completer.complete(j.job_id, j.lease_token, OK_1) for j in good[:3]),
            return_exceptions=True)
        later = await asyncio.wait_for(asyncio.gather(
            *(completer.complete(j.job_id, j.lease_token, OK_2) for j in good[3:])), 10)
    finally:
        completer.close()
        await asyncio.wait_for(task, 10)
    assert isinstance(results[0], psycopg.errors.InvalidTextRepresentation)
    assert results[1:] == [Outcome.COMPLETED] * 3
    assert later == [Outcome.COMPLETED] * len(good[3:])
    assert await _sql(db, "SELECT status FROM warden.jobs WHERE job_id = %s",
                      bad.job_id) == [(JobStatus.RUNNING,)]


async def test_the_completion_ending_a_wide_fan_out_reads_its_steps_a_few_times_not_per_step(
        db: Database, scheduler: Scheduler) -> None:
    """Finding the sink steps walked the run's steps once for each step (a NOT EXISTS per
    step): ending a fan-out of n steps fetched about n * n rows of warden.steps. Now the
    steps are walked a fixed number of times, whatever n."""
    width = 150
    steps = "\n".join(f"  s{i:03d}: {{type: job, topic: t.wide}}" for i in range(width))
    await support.store(db, f"id: wide\nname: wide\nversion: 1.0.0\nsteps:\n{steps}\n")
    run = await support.start(db, "wide")
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.wide"], n=width)
    assert len(claimed) == width
    async with db.connection() as conn:
        await jobs_q.complete_many(conn, [Completion.of(j.job_id, j.lease_token, {})
                                          for j in claimed[:-1]])
    last = claimed[-1]
    conn = await connect(db.url, autocommit=False)  # its own counts (as the test above)
    try:
        outcomes = await jobs_q.complete_many(
            conn, [Completion.of(last.job_id, last.lease_token, {"last": True})])
        cur = await conn.execute("SELECT idx_tup_fetch FROM pg_stat_xact_user_tables "
                                 "WHERE relid = 'warden.steps'::regclass")
        row = await cur.fetchone()
        await conn.commit()
    finally:
        await conn.close()
    assert outcomes == {last.job_id: Outcome.COMPLETED}
    ended = (await support.detail(db, run.run_id)).run
    assert ended.status is RunStatus.SUCCEEDED and len(ended.output) == width
    assert ended.output[last.step_id] == {"last": True}
    assert row is not None and row[0] < 5 * width, f"{row[0]} rows of warden.steps fetched"
