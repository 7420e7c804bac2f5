"""Workers register, heartbeat, and leave; queues and run documents say who polls what."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import psycopg
import pytest

from engine.runs import fleet, views
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import workers as workers_q
from engine.store.records import WorkerRow
from engine.worker.runner import Job, NonRetryable, Worker, WorkerConfig
from tests import support

pytestmark = pytest.mark.anyio

ONE_STEP = """
id: lonely
name: one job nobody takes
version: 1.0.0
steps:
  escalate: {type: job, topic: job.incident.escalate}
"""


def test_worker_rows_mirror_the_table_plus_their_derived_state(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'warden' "
            "AND table_name = 'workers' ORDER BY ordinal_position").fetchall()]
    assert [*columns, "state"] == [f.name for f in dataclasses.fields(WorkerRow)]


async def test_a_worker_registers_beats_with_its_jobs_in_flight_and_leaves_stopped(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE_STEP)
    release = asyncio.Event()

    async def handle(job: Job) -> Any:
        await release.wait()
        return {"done": job.step_id}

    worker = Worker(db, handle, WorkerConfig(topics=("job.incident.escalate",), concurrency=2,
                                             name="w-test", poll_interval_s=0.1,
                                             presence_interval_s=0.1))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        [live] = await support.wait_for(lambda: fleet.workers(db), what="registration")
        assert (live.name, live.state, live.topics, live.concurrency) == (
            "w-test", "live", ["job.incident.escalate"], 2)
        run = await support.start(db, "lonely")
        await support.settle(scheduler)

        async def busy() -> list[WorkerRow]:
            return [w for w in await fleet.workers(db) if w.jobs_in_flight == 1]

        await support.wait_for(busy, what="a heartbeat with one job in flight")
        [queue] = [q for q in await fleet.queues(db, "default")
                   if q.topic == "job.incident.escalate"]
        assert (queue.depth, queue.running, queue.claimed_last_minute, queue.live_workers,
                queue.workers) == (0, 1, 1, 1, ["w-test"])
        doc = views.run_detail(await support.detail(db, run.run_id))
        assert doc["steps"][0]["state"] == "running"
        assert doc["steps"][0]["note"] == "running on w-test"
        release.set()
    finally:
        stop.set()
        await running
    assert await fleet.workers(db) == []  # none live
    [gone] = await fleet.workers(db, include_gone=True)
    assert (gone.state, gone.jobs_in_flight) == ("stopped", 0)
    assert gone.stopped_at is not None


async def test_a_silent_worker_turns_dead_after_three_missed_beats(db: Database) -> None:
    async with db.connection() as conn:
        row = await workers_q.register(conn, name="w-silent", host="h", pid=1,
                                       topics=["t.a", "t.b"], concurrency=1, version="x",
                                       heartbeat_ms=100)
    assert row.state == "live"
    assert (await fleet.workers(db))[0].worker_id == row.worker_id

    async def dead() -> list[WorkerRow]:
        return [w for w in await fleet.workers(db, include_gone=True) if w.state == "dead"]

    await support.wait_for(dead, timeout=5, what="three missed beats")
    assert await fleet.workers(db) == []
    async with db.connection() as conn:  # a dead worker's row is not revived by a beat
        assert await workers_q.live_per_topic(conn, ["t.a", "t.c"]) == {"t.a": 0, "t.c": 0}


async def test_a_pending_job_nobody_polls_is_pending_not_running_and_says_why(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE_STEP)
    run = await support.start(db, "lonely")
    await support.settle(scheduler)
    doc = views.run_detail(await support.detail(db, run.run_id))
    [step] = doc["steps"]
    assert (step["status"], step["state"]) == ("running", "pending")
    assert step["note"] == "pending: no live worker polls topic job.incident.escalate"
    assert doc["summary"] == ("Running: escalate (pending: no live worker polls topic "
                              "job.incident.escalate)")
    [queue] = await fleet.queues(db, None)
    assert (queue.topic, queue.depth, queue.live_workers) == ("job.incident.escalate", 1, 0)
    assert views.queue(queue)["unattended"] is True
    async with db.connection() as conn:
        await workers_q.register(conn, name="w-other", host="h", pid=2,
                                 topics=["job.incident.escalate"], concurrency=1,
                                 version="x", heartbeat_ms=60_000)
    doc = views.run_detail(await support.detail(db, run.run_id))
    assert doc["steps"][0]["note"] == "pending: 1 live worker polls topic job.incident.escalate"
    assert (await fleet.queues(db, "other-tenant"))[0].depth == 0  # counts only its jobs


async def test_the_claim_rate_and_id_prefixes_read_indexes_not_tables(
        db: Database, scheduler: Scheduler) -> None:
    from engine.core.ids import prefix_range
    from engine.store.sqlfiles import get

    await support.store(db, ONE_STEP)
    runs = [await support.start(db, "lonely") for _ in range(20)]
    await support.settle(scheduler)
    async with db.connection() as conn:
        # the realistic shape: most attempts finished long ago, a few were claimed lately
        await conn.execute("""
            INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic,
                                     status, started_at, finished_at)
            SELECT j.tenant_id, j.run_id::text || ':escalate@' || n, j.run_id, 'escalate', n,
                   j.topic, 'succeeded', now() - interval '2 days', now() - interval '2 days'
              FROM warden.jobs j, generate_series(2, 300) AS n""")
        await conn.execute("ANALYZE warden.jobs")
        await conn.execute("ANALYZE warden.runs")
        cur = await conn.execute("EXPLAIN " + get("queues_list").sql, {"tenant_id": "default"})
        plan = "\n".join(r[0] for r in await cur.fetchall())
        assert "jobs_by_started" in plan, plan
        low, high = prefix_range(str(runs[3].run_id)[:8], "RUN_ID")
        # 20 runs are a page: a scan is cheaper; what matters is that the key can be used
        await conn.execute("SET enable_seqscan = off")
        cur = await conn.execute("EXPLAIN " + get("runs_by_id_prefix").sql, {
            "tenant_id": "default", "id_low": low, "id_high": high, "limit": 11})
        plan = "\n".join(r[0] for r in await cur.fetchall())
        await conn.execute("RESET enable_seqscan")
        # the primary key, or runs_partition_key, which leads with the same two columns
        assert "runs_pkey" in plan or "runs_partition_key" in plan, plan


async def test_a_handler_that_outlives_its_lease_keeps_it_by_heartbeats(
        db: Database, scheduler: Scheduler) -> None:
    """The first heartbeat comes a third of the lease after the claim, then every third;
    a job that ends before its first beat sends none.

    The lease is long enough that a loaded machine's pause of a few hundred milliseconds
    does not make the first beat late (with 0.6 s, a CI run's beat once arrived after the
    lease had ended and was fenced); the handler still outlives it 2.5 times over."""
    await support.store(db, ONE_STEP)
    lease_s = 1.5

    async def handle(job: Job) -> Any:
        await asyncio.sleep(float(job.input["sleep_s"]))
        return {"slept": job.input["sleep_s"]}

    worker = Worker(db, handle, WorkerConfig(topics=("job.incident.escalate",), concurrency=2,
                                             name="w-beat", poll_interval_s=0.1,
                                             lease_s=lease_s))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        long_run = await support.start(db, "lonely", {"sleep_s": 2.5 * lease_s})
        short_run = await support.start(db, "lonely", {"sleep_s": 0})
        await support.settle(scheduler)

        async def both_done() -> bool | None:
            runs = [await support.detail(db, r.run_id) for r in (long_run, short_run)]
            return all(d.jobs and d.jobs[0].status.value == "succeeded" for d in runs) or None

        await support.wait_for(both_done, what="both jobs to succeed", timeout=15)
    finally:
        stop.set()
        await running
    long_kinds = await support.kinds(db, long_run.run_id)
    # 2.5 leases long: the lease was extended, or the completion would have been fenced
    assert long_kinds.count("job.succeeded") == 1 and "job.lease_expired" not in long_kinds
    assert worker.completed == 2


async def test_a_success_frees_its_slot_before_its_write_and_unwritten_results_are_capped(
        db: Database, scheduler: Scheduler) -> None:
    """With one slot, a job whose handler returned lets the next job be claimed while its
    completion is still being written; but once `concurrency` results wait for the
    completer, the worker claims nothing more until they are written.

    The completions are held up by a lock on the runs' steps (every completion writes its
    step; a claim never touches one), so the claims go on and the writes cannot land."""
    await support.store(db, ONE_STEP)
    runs = [await support.start(db, "lonely", {"n": n}) for n in range(3)]
    await support.settle(scheduler)
    handled: list[int] = []

    async def handle(job: Job) -> Any:
        handled.append(int(job.input["n"]))
        return {"n": job.input["n"]}

    worker = Worker(db, handle, WorkerConfig(topics=("job.incident.escalate",), concurrency=1,
                                             name="w-slots", poll_interval_s=0.05))

    async def statuses() -> list[str]:
        return [(await support.detail(db, r.run_id)).jobs[0].status.value for r in runs]

    async def handled_two() -> bool | None:
        return len(handled) == 2 or None

    async def all_written() -> bool | None:
        return worker.completed == 3 or None

    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        async with db.transaction() as holder:
            await holder.execute(
                "SELECT 1 FROM warden.steps WHERE run_id = ANY (%s) FOR UPDATE",
                [[r.run_id for r in runs]])
            running = asyncio.create_task(worker.run(stop))
            # the first job's write waits on the lock; the second was claimed beside it
            await support.wait_for(handled_two, timeout=10,
                                   what="a second job handled while the first is unwritten")
            # two results unwritten with one slot: the third job is left alone, though
            # the worker polls every 50 ms
            await asyncio.sleep(0.5)
            assert handled == [0, 1]
            assert await statuses() == ["running", "running", "pending"]
        # the lock is gone: both writes land, and the third job is claimed and written
        await support.wait_for(all_written, what="all three jobs written", timeout=10)
    finally:
        stop.set()
        if running is not None:
            await running
    assert handled == [0, 1, 2]
    assert await statuses() == ["succeeded"] * 3


async def test_a_result_that_is_not_json_fails_its_job_and_the_worker_goes_on(
        db: Database, scheduler: Scheduler) -> None:
    """A set, or a float JSON has no literal for (NaN, the infinities), fails its attempt
    for good before anything is sent: the database would refuse the whole batch, and its
    error once stopped the worker's completions for every later job. The worker then
    completes the next job as usual, its result stored as the handler returned it."""
    await support.store(db, ONE_STEP)
    returns: dict[str, Any] = {"set": {1, 2}, "nan": float("nan"), "inf": float("-inf"),
                               "fine": {"é": [1, 2.5, None], "big": 2**62}}

    async def handle(job: Job) -> Any:
        return returns[job.input["kind"]]

    worker = Worker(db, handle, WorkerConfig(topics=("job.incident.escalate",),
                                             concurrency=4, name="w-json",
                                             poll_interval_s=0.05))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    runs = {}
    try:
        for kind in ("set", "nan", "inf"):
            runs[kind] = await support.start(db, "lonely", {"kind": kind})
        await support.settle(scheduler)

        async def ended(kind: str) -> bool | None:
            d = await support.detail(db, runs[kind].run_id)
            return (bool(d.jobs) and d.jobs[0].status.value in ("failed", "succeeded")) or None

        for kind in ("set", "nan", "inf"):
            await support.wait_for(lambda k=kind: ended(k), what=f"the {kind} job to end",
                                   timeout=15)
        runs["fine"] = await support.start(db, "lonely", {"kind": "fine"})
        await support.settle(scheduler)
        await support.wait_for(lambda: ended("fine"), what="the next job", timeout=15)
    finally:
        stop.set()
        await running
    for kind in ("set", "nan", "inf"):
        [job] = (await support.detail(db, runs[kind].run_id)).jobs
        assert job.status.value == "failed", kind
        assert job.error is not None
        assert job.error["message"] == "handler returned a non-JSON value", kind
    [fine] = (await support.detail(db, runs["fine"].run_id)).jobs
    assert fine.status.value == "succeeded" and fine.result == returns["fine"]
    assert worker.completed == 1 and worker.failed == 3


async def test_a_checkpoint_that_is_not_json_is_refused_to_the_handler_plainly(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE_STEP)

    async def handle(job: Job) -> Any:
        refused = []
        for state in ({"x": float("nan")}, {"x": {1}}):
            try:
                await job.save_checkpoint(state)
            except ValueError as exc:
                refused.append(str(exc))
        await job.save_checkpoint({"step": 1})
        return {"refused": refused}

    worker = Worker(db, handle, WorkerConfig(topics=("job.incident.escalate",),
                                             concurrency=1, name="w-checkpoint",
                                             poll_interval_s=0.05))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        run = await support.start(db, "lonely", {})
        await support.settle(scheduler)

        async def done() -> bool | None:
            d = await support.detail(db, run.run_id)
            return (bool(d.jobs) and d.jobs[0].status.value == "succeeded") or None

        await support.wait_for(done, what="the job to succeed", timeout=15)
    finally:
        stop.set()
        await running
    [job] = (await support.detail(db, run.run_id)).jobs
    assert job.result is not None
    assert [m.split(":")[0] for m in job.result["refused"]] == ["checkpoint is not JSON"] * 2
    assert job.checkpoint == {"step": 1}  # the valid one after them was saved


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_a_jobs_claim_and_success_are_debug_records_and_its_failure_is_info(
        db: Database, scheduler: Scheduler, caplog: pytest.LogCaptureFixture,
        level: str) -> None:
    """A worker at INFO writes nothing for a job that goes well (the timeline holds its
    claim and completion): those two records were a fifth of a busy worker's CPU. A
    failure is written at INFO, and DEBUG shows every claim and success."""
    await support.store(db, ONE_STEP)

    async def handle(job: Job) -> Any:
        if job.input.get("fail"):
            raise NonRetryable("it was asked to fail")
        return {"ok": True}

    caplog.set_level(level, logger="engine.worker.runner")
    worker = Worker(db, handle, WorkerConfig(topics=("job.incident.escalate",), concurrency=2,
                                             name="w-logs", poll_interval_s=0.05))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        good = await support.start(db, "lonely", {})
        bad = await support.start(db, "lonely", {"fail": True})
        await support.settle(scheduler)

        async def both_ended() -> bool | None:
            return (worker.completed, worker.failed) == (1, 1) or None

        await support.wait_for(both_ended, what="one success and one failure", timeout=15)
    finally:
        stop.set()
        await running
    records = [(r.levelname, r.getMessage()) for r in caplog.records
               if r.name == "engine.worker.runner"]
    good_job, bad_job = f"{good.run_id}:escalate@1", f"{bad.run_id}:escalate@1"
    assert ("INFO", f"job {bad_job} failed (NonRetryable)") in records
    quiet = [("DEBUG", f"job {good_job} claimed"), ("DEBUG", f"job {good_job} succeeded")]
    if level == "DEBUG":
        assert all(record in records for record in quiet), records
    else:
        assert not any(good_job in message for _, message in records), records
