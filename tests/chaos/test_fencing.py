"""Case 3: fencing. A worker frozen (SIGSTOP) past its lease comes back (SIGCONT) after
another worker claimed and completed its jobs: its heartbeat and completion change no row
(LeaseLost), it logs the loss and goes on working.

Two jobs are frozen: one whose handler would run 30 s (its next heartbeat finds the lease
gone and stops the handler) and one whose handler blocks the event loop past the lease
and then returns (its completion is fenced).
"""

from __future__ import annotations

import signal

import pytest

from engine.runs.services import Services
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    Deadline,
    audit,
    kill,
    log_of,
    lost_runs,
    query,
    retries,
    serve,
    show,
    started_jobs,
    wait_until,
    worker_args,
)

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.fence"
HANDLER = "tests.chaos.handlers:work"
WORKFLOW = f"""
id: fence
name: fence
version: 1.0.0
steps:
  work: {{type: job, topic: {TOPIC}, retries: {retries(max_attempts=3, backoff_ms=0)}}}
"""


async def test_a_worker_frozen_past_its_lease_is_fenced_and_moves_on(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(90)
    await support.store(svc.db, WORKFLOW)
    # DEBUG: a worker writes its successes there, and the last check reads them
    chaos.procs.env.update(WARDEN_LEASE_MS="1500", WARDEN_POLL_INTERVAL_MS="200",
                           WARDEN_LOG_LEVEL="DEBUG")
    serve(chaos.procs)
    marks = str(chaos.marks)
    long_run = (await support.start(svc, "fence", {"marks": marks,
                                                   "sleep_by_attempt": {"1": 30}})).run_id
    short_run = (await support.start(svc, "fence", {"marks": marks,
                                                    "sleep_by_attempt": {"1": 0.3},
                                                    "block_by_attempt": {"1": 3}})).run_id
    first = {r: f"{r}:work@1" for r in (long_run, short_run)}

    async def both_pending() -> bool:
        rows = await query(chaos.url, "SELECT count(*) FROM warden.jobs WHERE job_id = ANY(%s) "
                                      "AND status = 'pending'", [list(first.values())])
        return rows == [(2,)]

    # both jobs wait before worker A starts, so it claims them in one batch
    await wait_until(both_pending, deadline, "both jobs to be dispatched", timeout=20)
    worker_a = chaos.procs.warden(*worker_args([TOPIC], HANDLER, concurrency=2, name="worker-a"))

    async def both_running_on_a() -> bool:
        started = started_jobs(chaos.marks)
        return (all(job_id in started for job_id in first.values())
                and (chaos.marks / f"blocking-{first[short_run]}").exists())

    await wait_until(both_running_on_a, deadline, "worker A to run both jobs", timeout=30)
    worker_a.send_signal(signal.SIGSTOP)
    try:
        worker_b = chaos.procs.warden(*worker_args([TOPIC], HANDLER, concurrency=2,
                                                   name="worker-b"))

        async def both_done_by_b() -> bool:
            return await lost_runs(chaos.url, [long_run, short_run], deadline) == {}

        await wait_until(both_done_by_b, deadline,
                         "worker B to complete both jobs while A is frozen", timeout=30)
        before = dict(await query(chaos.url, "SELECT job_id, lease_expires_at FROM warden.jobs "
                                             "WHERE job_id = ANY(%s)", [list(first.values())]))
    finally:
        worker_a.send_signal(signal.SIGCONT)

    async def logged() -> bool:
        log = log_of(chaos.procs, worker_a)
        return all(f"job {job_id}: heartbeat fenced (lease_lost)" in log
                   or f"job {job_id}: result fenced" in log for job_id in first.values())

    await wait_until(logged, deadline, "worker A to log the lost leases", timeout=15)
    log_a = log_of(chaos.procs, worker_a)
    # the long handler is stopped by its heartbeat, which found the lease gone; the
    # blocked one returned and its completion was refused
    assert f"job {first[long_run]}: heartbeat fenced (lease_lost)" in log_a, log_a
    assert f"job {first[short_run]}: result fenced" in log_a, log_a

    # worker A changed nothing: its attempts ended timed_out by the reaper, with no result
    rows = await query(chaos.url, "SELECT job_id, status::text, worker, result, "
                                  "lease_expires_at FROM warden.jobs ORDER BY job_id")
    by_job = {r[0]: r[1:] for r in rows}
    for run_id, job_id in first.items():
        status, worker, result, lease = by_job[job_id]
        assert (status, worker, result) == ("timed_out", "worker-a", None)
        assert lease == before[job_id]  # no heartbeat extended it
        status, worker, result = by_job[f"{run_id}:work@2"][:3]
        assert (status, worker) == ("succeeded", "worker-b")
        assert {k: v for k, v in result.items() if k != "execution"} == {
            "step": "work", "attempt": 2, "pid": worker_b.pid}

    # ... and moves on: with B gone, A runs the next job
    kill(worker_b)
    next_run = (await support.start(svc, "fence", {"marks": marks})).run_id

    async def next_done() -> bool:
        return await lost_runs(chaos.url, [next_run], deadline) == {}

    await wait_until(next_done, deadline, "worker A to run a new job after the loss",
                     timeout=20)
    [(worker,)] = await query(chaos.url, "SELECT worker FROM warden.jobs WHERE run_id = %s",
                              [next_run])
    runs = [long_run, short_run, next_run]
    seen = await audit(chaos.url, chaos.marks, runs, ["work"], deadline)
    figures = seen.figures(len(runs), 2, fenced_heartbeats=log_a.count(": heartbeat fenced ("),
                           fenced_completions=log_a.count(": result fenced"))
    show(capsys, "fencing", figures)
    assert worker == "worker-a" and worker_a.poll() is None
    seen.assert_clean()
    assert figures.re_executions == 2
    # the handler of the fenced completion did finish its work (the record says so), but
    # Warden kept the result of attempt 2 only: 4 handler completions, 3 accepted
    assert seen.completed == 4
    # a fenced completion is a loss, not a success: the worker must not report both
    # (and it does report a success: the job it ran after the loss)
    async def next_logged() -> bool:
        return f"job {next_run}:work@1 succeeded" in log_of(chaos.procs, worker_a)

    await wait_until(next_logged, deadline, "worker A to log its next job's success",
                     timeout=10)
    log_a = log_of(chaos.procs, worker_a)
    assert f"job {first[short_run]} succeeded" not in log_a, (
        "worker A logged a fenced completion as succeeded:\n" + log_a)
