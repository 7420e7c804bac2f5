"""The Python worker: claims jobs in batches, runs a handler, heartbeats, completes or fails.

Handler contract (other code is written against it): ``def handler(job)`` or
``async def handler(job)``; ``job`` is a `Job`. The return value (JSON-serialisable) is
the step's output; any exception fails the attempt (retried per the step's policy);
`NonRetryable` fails it without retry. ``job.save_checkpoint(state)`` stores state that
the next attempt receives as ``job.checkpoint`` — awaitable in async handlers, blocking
in sync ones, stored before it returns.

No transaction is held while a handler runs: claim, heartbeat and completion are each
one short statement.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from engine.core.enums import Outcome
from engine.core.errors import DatabaseUnavailable, LeaseLost, WardenError
from engine.process import metrics, tracing
from engine.process.loops import Wake, wait_any
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store import workers as workers_q
from engine.store.listener import JOBS_CHANNEL, Listener
from engine.store.records import ClaimedJob
from engine.worker.completer import RETRY_DELAYS_S, Completer

log = logging.getLogger(__name__)


class NonRetryable(Exception):
    """Raised by a handler: fail this attempt and do not retry the step."""


@dataclass
class Job:
    """What a handler receives."""

    job_id: str
    run_id: str
    step_id: str
    attempt: int
    topic: str
    input: Any
    upstream: dict[str, Any]
    constraints: dict[str, Any]
    checkpoint: Any
    tenant_id: str
    save_checkpoint: Callable[[Any], Any] = field(repr=False)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    traceparent: str | None = None
    """The W3C traceparent of the attempt's dispatch (None unless traces are on). With
    traces on the handler already runs inside the attempt's span, so spans it starts with
    the OpenTelemetry API join the run's trace; pass this on to carry the trace further."""

    @property
    def side_effect_key(self) -> str:
        """Stable across attempts: deduplicate the handler's side effects downstream by it.
        The job id without its ``@attempt``: ``run_id:step_id``, or ``run_id:step_id[i]``
        for a for_each item (each item its own key)."""
        return self.job_id.rsplit("@", 1)[0]

    @property
    def is_cancelled(self) -> bool:
        """For sync handlers: True once the run was cancelled or the lease was lost."""
        return self.cancelled.is_set()


Handler = Callable[[Job], Any]


@dataclass(frozen=True)
class WorkerConfig:
    topics: tuple[str, ...]
    concurrency: int = 4
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    shutdown_timeout_s: float = 30.0
    presence_interval_s: float = 5.0  # how often the warden.workers row is refreshed


class Worker:
    def __init__(self, db: Database, handler: Handler, config: WorkerConfig) -> None:
        if not config.topics:
            raise ValueError("a worker needs at least one topic")
        self.db = db
        self.handler = handler
        self.config = config
        self._is_async = inspect.iscoroutinefunction(handler)
        # every job claimed, until its outcome is written; of those, the ones whose handler
        # still runs (each holds one of `concurrency` slots: see _free)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._handling: set[str] = set()
        self._wake = Wake()
        self.completer = Completer(db)
        self.completed = 0
        self.failed = 0
        self.worker_id: UUID | None = None  # our warden.workers row, once registered

    async def run(self, stop: asyncio.Event) -> None:
        """Works until ``stop`` is set, then drains in-flight jobs (within the deadline)."""
        listener = Listener(self.db.url, JOBS_CHANNEL, self._on_notify)
        listen_task = asyncio.create_task(listener.run())
        completer_task = asyncio.create_task(self.completer.run())
        presence_task = asyncio.create_task(self._presence())
        try:
            while not stop.is_set():
                # cleared before claiming, never after: a NOTIFY that arrives while the
                # claim runs must wake the next wait, not be thrown away
                self._wake.clear()
                claimed = await self._claim_batch()
                if claimed and self._free() > 0:
                    continue  # the queue may hold more: claim again before sleeping
                woken_by = await wait_any(stop, self._wake, self.config.poll_interval_s)
                metrics.woke("worker", woken_by)
        finally:
            listen_task.cancel()
            await self._drain()
            self.completer.close()
            await completer_task
            presence_task.cancel()
            await self._leave()

    async def _presence(self) -> None:
        """Registers this worker in warden.workers and refreshes its row (last seen, jobs in
        flight) every presence interval, so operators see who polls which topic. Best
        effort: a database outage delays a beat, it never stops the worker."""
        while True:
            try:
                async with self.db.connection() as conn:
                    row = (None if self.worker_id is None else await workers_q.heartbeat(
                        conn, self.worker_id, len(self._handling)))
                    if row is None:  # first beat, or our row was pruned while cut off
                        row = await workers_q.register(
                            conn, name=self.config.name, host=socket.gethostname(),
                            pid=os.getpid(), topics=self.config.topics,
                            concurrency=self.config.concurrency, version=_version(),
                            heartbeat_ms=int(self.config.presence_interval_s * 1000))
                        self.worker_id = row.worker_id
            except WardenError as exc:  # the database is away, or refused the row
                log.warning("worker presence not recorded: %s", exc)
            await asyncio.sleep(self.config.presence_interval_s)

    async def _leave(self) -> None:
        if self.worker_id is None:
            return
        try:
            async with self.db.connection() as conn:
                await workers_q.stop(conn, self.worker_id)
        except WardenError as exc:  # the row turns dead after three missed beats
            log.warning("worker stop not recorded: %s", exc)

    def _on_notify(self, topic: str) -> None:
        if not topic or topic in self.config.topics:
            self._wake.set()

    async def _claim_batch(self) -> int:
        free = self._free()
        if free <= 0:
            return 0
        try:
            async with self.db.connection() as conn:
                claimed = await jobs_q.claim(
                    conn, topics=list(self.config.topics), worker=self.config.name,
                    max_jobs=free, lease=timedelta(seconds=self.config.lease_s))
        except DatabaseUnavailable as exc:
            log.warning("claim failed, database unavailable: %s", exc)
            await asyncio.sleep(min(self.config.poll_interval_s, 1.0))
            # try again soon rather than after a whole poll interval: the wake-up that
            # brought us here (often the catch-up after a reconnect) is spent
            self._wake.set(metrics.RETRY)
            return 0
        metrics.claimed(claimed)
        for row in claimed:
            task = asyncio.create_task(metrics.timed_job(row.topic, self._execute(row)),
                                       name=row.job_id)
            self._inflight[row.job_id] = task
            self._handling.add(row.job_id)
            task.add_done_callback(self._finished)
        return len(claimed)

    def _free(self) -> int:
        """How many jobs the next claim may take.

        A slot is held while a job's handler runs, not until its outcome is written: a
        job whose handler has returned waits for the completer without one, so the next
        claim runs beside the completion's write instead of queueing behind its commit
        (River frees its slots the same way; bench/README.md, session 18). At most
        `concurrency` such jobs wait: beyond that the worker stops claiming, so a database
        that writes slower than handlers finish slows the claims down rather than piling
        up results under leases no heartbeat extends any more."""
        handling = len(self._handling)
        return min(self.config.concurrency - handling,
                   2 * self.config.concurrency - len(self._inflight))

    def _handler_returned(self, job_id: str) -> None:
        if job_id in self._handling:
            self._handling.discard(job_id)
            self._wake.set(metrics.SLOT)  # a slot is free: claim again

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task.get_name(), None)
        self._handling.discard(task.get_name())
        self._wake.set(metrics.SLOT)

    async def _execute(self, row: ClaimedJob) -> None:
        # with traces on, the attempt is a span, current while the handler runs (its task
        # or thread copies the context); off, a no-op
        with tracing.job_attempt(row, self.config.name) as span:
            await self._attempt(row, span)

    async def _attempt(self, row: ClaimedJob, span: tracing.Attempt) -> None:
        job = self._job(row)
        extra = {"job_id": row.job_id, "run_id": job.run_id, "step_id": row.step_id}
        # The two records of a job that goes well are DEBUG: at INFO they were a fifth of
        # a busy worker's own CPU (bench/README.md, session 16), and the timeline already
        # holds each claim and completion with its worker. Failures and fences stay loud.
        log.debug("job %s claimed", row.job_id, extra=extra)
        work = _Work(self.handler, job, is_async=self._is_async)
        beat = _Heartbeats(lambda: self._heartbeat(row, job, work), self.config.lease_s / 3)
        try:
            result = await work.run()
        except asyncio.CancelledError:
            if job.is_cancelled:  # we cancelled it: lease lost or run cancelled
                span.outcome("fenced")
                return
            # the worker is stopping past its deadline: give the job back, spending no retry
            span.outcome("released")
            await self._settle(row, jobs_q.release, reason=f"worker {self.config.name} stopped")
            raise
        except NonRetryable as exc:
            span.failed(exc, retryable=False)
            await self._fail(row, _error_doc(exc), retryable=False)
            return
        except Exception as exc:
            span.failed(exc, retryable=True)
            await self._fail(row, _error_doc(exc), retryable=True)
            return
        finally:
            beat.cancel()
            # the slot goes back once the handler is done; a failure or a release (each
            # written alone, above) holds it until written, a success does not (_free)
            self._handler_returned(row.job_id)
        if job.is_cancelled:
            span.outcome("fenced")
            return
        try:
            encoded = jobs_q.encode_result(result)  # once: the completion sends this text
        except (TypeError, ValueError) as exc:
            span.failed(exc, retryable=False)
            await self._fail(row, _error_doc(exc, "handler returned a non-JSON value"),
                             retryable=False)
            return
        try:
            outcome = await self.completer.complete(row.job_id, row.lease_token, encoded)
        except WardenError as exc:  # the database refuses the result itself
            span.failed(exc, retryable=False)
            await self._fail(row, _error_doc(exc, f"result could not be stored: {exc}"),
                             retryable=False)
            return
        except Exception as exc:  # an error the store does not translate: a bug
            span.failed(exc, retryable=True)
            log.error("job %s: its completion failed (%s); the lease will expire and the "
                      "attempt be retried", row.job_id, exc, extra=extra)
            return
        if outcome is Outcome.COMPLETED:
            self.completed += 1
            span.outcome("succeeded")
            log.debug("job %s succeeded", row.job_id, extra=extra)
        elif outcome is not None:
            span.outcome(outcome.value)
            _fenced(row, outcome, "result")

    def _job(self, row: ClaimedJob) -> Job:
        loop = asyncio.get_running_loop()
        holder: list[Job] = []

        async def save_async(state: Any) -> None:
            await self._save_checkpoint(row, holder[0], state)

        def save_blocking(state: Any) -> None:
            asyncio.run_coroutine_threadsafe(save_async(state), loop).result()

        job = Job(job_id=row.job_id, run_id=str(row.run_id), step_id=row.step_id,
                  attempt=row.attempt, topic=row.topic, input=row.input,
                  upstream=dict(row.upstream or {}), constraints=dict(row.constraints or {}),
                  checkpoint=row.checkpoint, tenant_id=row.tenant_id,
                  save_checkpoint=save_async if self._is_async else save_blocking,
                  traceparent=row.traceparent)
        holder.append(job)
        return job

    async def _save_checkpoint(self, row: ClaimedJob, job: Job, state: Any) -> None:
        try:
            jobs_q.encode_result(state)
        except (TypeError, ValueError) as exc:
            # the handler's mistake, said plainly: the database would refuse NaN or an
            # infinity with an error about its own syntax
            raise ValueError(f"checkpoint is not JSON: {exc}") from exc
        async with self.db.connection() as conn:
            await jobs_q.heartbeat(conn, job_id=row.job_id, lease_token=row.lease_token,
                                   extend=timedelta(seconds=self.config.lease_s),
                                   checkpoint=state)
        job.checkpoint = state

    async def _heartbeat(self, row: ClaimedJob, job: Job, work: _Work) -> None:
        """Beats now (a third of the lease has passed since the claim), then every third."""
        interval = self.config.lease_s / 3
        while True:
            try:
                async with self.db.connection() as conn:
                    await jobs_q.heartbeat(conn, job_id=row.job_id, lease_token=row.lease_token,
                                           extend=timedelta(seconds=self.config.lease_s))
            except LeaseLost as exc:
                _fenced(row, exc.outcome, "heartbeat")
                job.cancelled.set()
                work.stop()  # a sync handler's thread cannot be killed: it sees is_cancelled
                return
            except DatabaseUnavailable as exc:
                log.warning("job %s: heartbeat failed (%s); retrying", row.job_id, exc)
            await asyncio.sleep(interval)

    async def _fail(self, row: ClaimedJob, error: dict[str, Any], *, retryable: bool) -> None:
        self.failed += 1
        log.info("job %s failed (%s)", row.job_id, error.get("type"),
                 extra={"job_id": row.job_id, "retryable": retryable})
        await self._settle(row, jobs_q.fail, error=error, retryable=retryable)

    async def _settle(self, row: ClaimedJob, call: Callable[..., Awaitable[None]],
                      **kwargs: Any) -> bool:
        """Completes, fails or releases under the lease token, retrying while the database
        is away; True if the write landed. A fenced write (lease lost) is logged and
        dropped: someone else owns the job now."""
        for delay in RETRY_DELAYS_S:
            try:
                async with self.db.connection() as conn:
                    await call(conn, job_id=row.job_id, lease_token=row.lease_token, **kwargs)
                return True
            except LeaseLost as exc:
                _fenced(row, exc.outcome, call.__name__)
                return False
            except DatabaseUnavailable:
                await asyncio.sleep(delay)
        log.error("job %s: could not record its result; the lease will expire and the "
                  "attempt will be retried", row.job_id, extra={"job_id": row.job_id})
        return False

    async def _drain(self) -> None:
        if not self._inflight:
            return
        log.info("stopping: waiting up to %.0fs for %d in-flight jobs",
                 self.config.shutdown_timeout_s, len(self._inflight))
        _done, pending = await asyncio.wait(list(self._inflight.values()),
                                            timeout=self.config.shutdown_timeout_s)
        for task in pending:
            task.cancel()  # each releases its job on the way out
        if pending:
            await asyncio.wait(pending, timeout=5)


class _Work:
    """A handler's run on one job, and the heartbeat's way to stop it.

    An async handler runs in the job's own task, not a task of its own: a second task per
    job (created, scheduled, awaited, its result handed over) showed in a busy worker's
    CPU (bench/README.md, session 14). Stopping it cancels the job's task, and only while
    the handler runs: once it has returned, its result is being recorded, and the fence
    in the database decides whether that lands. A sync handler runs in a thread, awaited
    as a future; stopping cancels the wait (the thread sees ``job.is_cancelled``)."""

    def __init__(self, handler: Callable[[Job], Any], job: Job, *, is_async: bool) -> None:
        self._handler = handler
        self._job = job
        self._is_async = is_async
        self._running: asyncio.Task[Any] | asyncio.Future[Any] | None = None

    async def run(self) -> Any:
        if not self._is_async:
            self._running = asyncio.ensure_future(asyncio.to_thread(self._handler, self._job))
            try:
                return await self._running
            finally:
                self._running = None
        self._running = asyncio.current_task()
        try:
            return await self._handler(self._job)
        finally:
            self._running = None

    def stop(self) -> None:
        if self._running is not None:
            self._running.cancel()


class _Heartbeats:
    """A job's heartbeat loop, started only if the job outlives its first interval: a timer
    armed at the claim, not a task. Most jobs end before their first beat, and a task
    created, started and cancelled per job showed in a busy worker's own CPU
    (bench/README.md, session 9)."""

    def __init__(self, beats: Callable[[], Coroutine[Any, Any, None]], first_s: float) -> None:
        self._beats = beats
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(first_s, self._start)

    def _start(self) -> None:
        self._task = asyncio.create_task(self._beats())

    def cancel(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


class _Shutdown(Exception):
    """The worker stopped before the handler finished."""


def _fenced(row: ClaimedJob, outcome: Outcome, write: str) -> None:
    """A write of this worker was fenced, on whichever path (single or batched): someone
    else owns the job now, or its run was cancelled. Logged, and the handler stopped."""
    log.warning("job %s: %s fenced (%s); no longer ours", row.job_id, write, outcome.value,
                extra={"job_id": row.job_id, "outcome": outcome.value})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgwarden")
    except PackageNotFoundError:
        return "unknown"


def _error_doc(exc: BaseException, message: str | None = None) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": message or str(exc),
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}

