"""Process-local metrics: what this process saw happen, in one dedicated registry.

The engine reports through the one-line calls below; nothing else touches the metric
objects. They live in ``REGISTRY``, never in prometheus_client's global default, so
several apps (or test harnesses) in one process share one set without clashing and
nothing registered by an unrelated library leaks into /metrics.

Each process counts only what it did itself: `warden serve` exposes its scheduler,
reaper, reconciler and notifier (wake-ups, actions, run durations) on the API's ``/metrics``,
together with the gauges read from the database at scrape time (`engine.process.dbgauges`). A
`warden worker` has no HTTP server, so its claim latency, job durations and wake-ups are
exposed only when it is started with ``--metrics-port`` (`serve_http`). Prometheus adds
the processes up; a restart resets a process's counters, which ``rate()`` expects.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterable, Mapping
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder, start_http_server
from prometheus_client.metrics_core import Metric

from engine.store.records import ClaimedJob, EndedRun, RunRow

# what ended a loop's wait: the `cause` label of warden_wakeups_total (STOP is not counted)
STOP = "stop"
NOTIFY = "notify"
POLL = "poll"
SLOT = "slot"  # a worker's job finished: a slot is free
RETRY = "retry"  # a worker's claim failed: try again soon

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, memory, open fds

_WAITS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_RUNS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600)

CLAIM_LATENCY = Histogram(
    "warden_claim_latency_seconds",
    "From a job becoming claimable (available_at) to its claim, database clock; observed "
    "by the Python worker that claimed it.", ["topic"], buckets=_WAITS, registry=REGISTRY)
JOB_DURATION = Histogram(
    "warden_job_duration_seconds",
    "One attempt of a job step in a Python worker, from its claim to its result recorded "
    "(or abandoned); observed in the worker process, monotonic clock.",
    ["topic"], buckets=_WAITS, registry=REGISTRY)
RUN_DURATION = Histogram(
    "warden_run_duration_seconds",
    "From a run's creation to its final status (database clock); observed by the process "
    "that ended it (scheduler, cancel, deadline), when it ended it, and by the scheduler "
    "for a run a worker's completion ended. Runs denied at submit never ran and are not "
    "observed.", ["status"], buckets=_RUNS, registry=REGISTRY)
WAKEUPS = Counter(
    "warden_wakeups",
    "Waits of a loop (scheduler, worker, reaper, reconciler, notifier) ended by a NOTIFY or "
    "the "
    "listener's catch-up after a reconnect (notify), by the poll interval (poll), or in a "
    "worker by a finished job freeing a slot (slot) or a failed claim's retry (retry).",
    ["loop", "cause"], registry=REGISTRY)
REAPER_ACTIONS = Counter(
    "warden_reaper_actions",
    "What the reaper ended: expired leases (lease_expired, each an attempt timed_out) and "
    "approvals nobody decided in time (approval_expired).", ["action"], registry=REGISTRY)
RECONCILER_REPAIRS = Counter(
    "warden_reconciler_repairs",
    "What the reconciler repaired: runs ended past their deadline (deadlines), stuck runs "
    "woken (flagged), stalled steps retried or failed (stalled), unclaimed jobs reported "
    "and announced again (unclaimed).", ["action"], registry=REGISTRY)
FULL_LOOKS = Histogram(
    "warden_full_look_seconds",
    "How long a loop's look to the beginning of its index took: the reaper's of expired "
    "leases (reaper), the observer of ends' (ends), the reconciler's sweeps (reconciler). "
    "Seconds here mean an old snapshot keeps what they walk (docs/design.md#lookbacks).",
    ["loop"], buckets=_WAITS, registry=REGISTRY)
WEBHOOK_ATTEMPTS = Counter(
    "warden_webhook_attempts",
    "Webhook POSTs of the notifier by outcome: delivered (2xx), retry (to be posted again "
    "after a backoff), failed (given up: a permanent 4xx or the last attempt), lease_lost "
    "(answered after the row's lease ended; another notifier owns it, nothing recorded).",
    ["outcome"], registry=REGISTRY)


def claimed(rows: Iterable[ClaimedJob]) -> None:
    for row in rows:
        CLAIM_LATENCY.labels(row.topic).observe(max(row.waited_s, 0.0))


async def timed_job(topic: str, attempt: Awaitable[None]) -> None:
    """Runs one attempt (in the caller's task, so cancelling it is unchanged) and observes
    its duration however it ends."""
    started = time.monotonic()
    try:
        await attempt
    finally:
        JOB_DURATION.labels(topic).observe(time.monotonic() - started)


def run_ended(run: RunRow | EndedRun) -> None:
    """Called in the transaction that ends the run, or by the observer of ends once its
    statement has taken the end off warden.run_ends (Scheduler.observe_ends): if that
    transaction is rolled back after all (a bug, or the database lost mid-pass), the run
    may be observed again when it ends for good. Rare, and a count off by one beats a hook on
    every commit."""
    if run.status.is_final and run.finished_at is not None:
        RUN_DURATION.labels(run.status.value).observe(
            max((run.finished_at - run.created_at).total_seconds(), 0.0))


def woke(loop: str, cause: str) -> None:
    if cause != STOP:  # not a wake-up: the process is stopping
        WAKEUPS.labels(loop, cause).inc()


def full_look(loop: str, seconds: float) -> None:
    FULL_LOOKS.labels(loop).observe(seconds)


def reaped(*, leases: int, approvals: int) -> None:
    REAPER_ACTIONS.labels("lease_expired").inc(leases)
    REAPER_ACTIONS.labels("approval_expired").inc(approvals)


def webhook_attempts(counts: Mapping[str, int]) -> None:
    for outcome, n in counts.items():
        WEBHOOK_ATTEMPTS.labels(outcome).inc(n)


def repaired(counts: Mapping[str, int]) -> None:
    for action, n in counts.items():
        RECONCILER_REPAIRS.labels(action).inc(n)


class _Scrape:
    """This process's metrics followed by families made for one scrape."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        yield from REGISTRY.collect()
        yield from self.families


def exposition(families: Iterable[Metric], accept: str | None) -> tuple[bytes, str]:
    """The body and content type of a scrape: the text format, or OpenMetrics when the
    scraper asks for it."""
    encode, content_type = choose_encoder(accept or "")
    return encode(_Scrape(families)), content_type


def serve_http(host: str, port: int) -> tuple[WSGIServer, Thread]:
    """Serves this process's metrics on their own port, in a daemon thread (the worker's
    ``--metrics-port``; OSError if the port is taken)."""
    return start_http_server(port, addr=host, registry=REGISTRY)
