"""Graceful shutdown, cancellation of running handlers, and the session limits of engine
connections (issue 5), with real `warden worker` and `warden serve` processes.

Fast (a few seconds each); the slow fault-injection cases live in tests/chaos.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from engine.core.enums import JobStatus, RunStatus
from engine.runs import stopping
from engine.store import Database
from engine.store.connection import connect
from tests import support
from tests.chaos.harness import free_port, serve, worker_args
from tests.e2e.processes import Processes

pytestmark = pytest.mark.anyio

TOPIC = "t.stop"
ASYNC_HANDLER = "tests.chaos.handlers:cancellable"
SYNC_HANDLER = "tests.chaos.handlers:cancellable_sync"
LEASE_S = 1.5
WORKFLOW = f"""
id: stoppable
name: stoppable
version: 1.0.0
steps:
  work: {{type: job, topic: {TOPIC}}}
"""


async def _until(check: Any, what: str, timeout: float = 15) -> Any:
    return await support.wait_for(check, timeout=timeout, interval=0.05, what=what)


async def _exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} still running after {timeout}s")
        await asyncio.sleep(0.05)
    return proc.returncode


async def _started(marks: Path, step: str = "work") -> float:
    async def started() -> bool:
        return (marks / f"started-{step}").exists()

    await _until(started, "the handler to start")
    return time.time()


async def _jobs(db: Database, run_id: UUID) -> list[tuple[int, JobStatus]]:
    return [(j.attempt, j.status) for j in (await support.detail(db, run_id)).jobs]


async def test_sigterm_lets_the_in_flight_job_finish_and_the_worker_exits_0(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, WORKFLOW)
    serve(procs)
    worker = procs.warden(*worker_args([TOPIC], ASYNC_HANDLER, concurrency=2,
                                       shutdown_timeout=10))
    run = await support.start(db, "stoppable", {"marks": str(marks), "sleep_s": 2})
    await _started(marks)
    worker.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    late = await support.start(db, "stoppable", {"marks": str(marks), "sleep_s": 0})

    assert await _exit_code(worker, timeout=10) == 0
    assert time.monotonic() - stopped_at < 10
    assert (marks / "finished-work").exists()
    assert await _jobs(db, run.run_id) == [(1, JobStatus.SUCCEEDED)]
    # a stopping worker claims nothing new
    assert await _jobs(db, late.run_id) == [(1, JobStatus.PENDING)]


async def test_sigterm_past_the_deadline_releases_the_job_without_spending_a_retry(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, WORKFLOW)  # max_attempts 1: a released attempt must not count
    serve(procs)
    worker = procs.warden(*worker_args([TOPIC], ASYNC_HANDLER, concurrency=2,
                                       shutdown_timeout=1))
    run = await support.start(db, "stoppable", {"marks": str(marks),
                                                "sleep_by_attempt": {"1": 60}})
    await _started(marks)
    worker.send_signal(signal.SIGTERM)

    assert await _exit_code(worker, timeout=1 + 5 + 3) == 0
    assert (marks / "cancelled-work").exists()  # the handler was stopped, not abandoned
    jobs = (await support.detail(db, run.run_id)).jobs
    assert jobs[0].status is JobStatus.FAILED and jobs[0].error["type"] == "Released"

    procs.warden(*worker_args([TOPIC], ASYNC_HANDLER, concurrency=2))

    async def succeeded() -> bool:
        return (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED

    await _until(succeeded, "the released job to run again and succeed")
    assert [a for a, _ in await _jobs(db, run.run_id)] == [1, 2]


async def test_sigterm_on_serve_stops_it_and_it_exits_0(procs: Processes) -> None:
    port = free_port()
    engine = procs.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{port}")
    async with httpx.AsyncClient(timeout=2) as client:
        async def ready() -> bool:
            try:
                return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await _until(ready, "serve to answer /readyz")
        engine.send_signal(signal.SIGTERM)
        assert await _exit_code(engine, timeout=10) == 0
        with pytest.raises(httpx.ConnectError):  # it stopped accepting
            await client.get(f"http://127.0.0.1:{port}/readyz")


@pytest.mark.parametrize("handler", [ASYNC_HANDLER, SYNC_HANDLER], ids=["async", "sync"])
async def test_cancelling_a_run_stops_its_running_handler_and_fences_the_job(
        db: Database, procs: Processes, marks: Path, handler: str) -> None:
    await support.store(db, WORKFLOW)
    serve(procs)
    worker = procs.warden(*worker_args([TOPIC], handler, concurrency=2),
                          WARDEN_LEASE_MS=str(int(LEASE_S * 1000)))
    run = await support.start(db, "stoppable", {"marks": str(marks), "sleep_s": 30})
    await _started(marks)
    await stopping.cancel(db, tenant_id="default", run_id=run.run_id, by="operator",
                          reason="test")
    cancelled_at = time.time()

    async def handler_stopped() -> float | None:
        path = marks / "cancelled-work"
        return float(path.read_text()) if path.exists() else None

    stopped_at = await _until(handler_stopped, "the handler to see the cancellation")
    # told by its next heartbeat: at most one heartbeat interval (lease / 3), plus a margin
    assert stopped_at - cancelled_at <= LEASE_S / 3 + 1.0

    await asyncio.sleep(2 * LEASE_S)  # a late completion would have landed by now
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.CANCELLED
    assert [(j.attempt, j.status) for j in detail.jobs] == [(1, JobStatus.CANCELLED)]
    assert detail.jobs[0].result is None
    kinds = await support.kinds(db, run.run_id)
    assert "job.cancelled" in kinds and "job.succeeded" not in kinds
    assert not (marks / "finished-work").exists()
    assert worker.poll() is None  # the worker goes on
    log = next(procs.logs.glob("*-worker.log")).read_text()
    assert "heartbeat fenced (cancelled); no longer ours" in log


async def test_engine_sessions_cut_off_runaway_statements_and_idle_transactions(
        db: Database, db_url: str) -> None:
    """Through the engine's pool and its one-off connections (LISTEN, CLI)."""
    async with db.connection() as conn:
        pooled = [(await (await conn.execute(f"SHOW {name}")).fetchone() or ("",))[0]
                  for name in ("statement_timeout", "idle_in_transaction_session_timeout")]
    one_off = await connect(db_url)
    try:
        single = [(await (await one_off.execute(f"SHOW {name}")).fetchone() or ("",))[0]
                  for name in ("statement_timeout", "idle_in_transaction_session_timeout")]
    finally:
        await one_off.close()
    for settings in (pooled, single):
        statement, idle = settings
        assert statement not in ("0", "")
        assert idle not in ("0", "")


async def test_no_transaction_stays_open_while_a_handler_runs(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, WORKFLOW)
    serve(procs)
    procs.warden(*worker_args([TOPIC], ASYNC_HANDLER, concurrency=2),
                 WARDEN_LEASE_MS=str(int(LEASE_S * 1000)))
    run = await support.start(db, "stoppable", {"marks": str(marks), "sleep_s": 3})
    await _started(marks)
    seen: list[tuple[Any, ...]] = []
    for _ in range(20):  # ~2 s of the handler's 3, heartbeats included
        async with db.connection() as conn:
            seen += await (await conn.execute("""
                SELECT pid, state, now() - xact_start, left(query, 80)
                  FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   -- a transaction held across the handler would be seconds old; a
                   -- short one is briefly "idle in transaction" between its statements
                   AND now() - xact_start > interval '500 milliseconds'""")).fetchall()
        await asyncio.sleep(0.1)
    assert seen == []

    async def succeeded() -> bool:
        return (await support.detail(db, run.run_id)).run.status is RunStatus.SUCCEEDED

    await _until(succeeded, "the run to succeed")
