"""GET /metrics: the database's state at scrape time and what this process counted.

Counters and histograms live in one registry per process (engine.process.metrics), shared by
every test of the session, so each test compares what it reads after acting with what
it read before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.core.enums import RunStatus
from engine.daemons.reaper import Reaper
from engine.daemons.reconciler import Reconciler
from engine.daemons.serve import EngineConfig, run_engine
from engine.store import connect
from engine.worker.runner import Job, Worker, WorkerConfig
from tests import support
from tests.api.conftest import Harness

pytestmark = pytest.mark.anyio

FLOW = """
id: measured
name: measured
version: 1.0.0
steps:
  a: {type: job, topic: t.metrics.a}
  b: {type: job, topic: t.metrics.b, depends_on: [a]}
  c: {type: job, topic: t.metrics.b, depends_on: [a]}
"""
TOPICS = ("t.metrics.a", "t.metrics.b")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(api: Harness) -> Samples:
    response = await api.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series this process never touched."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def families(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}


async def handle(job: Job) -> dict[str, Any]:
    return {"step": job.step_id}


@asynccontextmanager
async def engine_and_worker(api: Harness, *, poll_s: float) -> AsyncIterator[None]:
    """`warden serve`'s loops and a Python worker in this process (so this process's
    registry, the one /metrics shows here, sees their counters)."""
    stop = asyncio.Event()
    config = EngineConfig(poll_interval_s=poll_s, reap_interval_s=0.05,
                          reconcile_interval_s=poll_s, ends_interval_s=0.05)
    worker = Worker(api.svc.db, handle, WorkerConfig(topics=TOPICS, concurrency=4,
                                                     poll_interval_s=poll_s))
    tasks = [asyncio.create_task(run_engine(api.svc, config, stop)),
             asyncio.create_task(worker.run(stop))]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)


async def start_run(api: Harness) -> str:
    await support.store(api.svc.db, FLOW)
    started = await api.client.post("/api/v1/workflows/measured/runs", json={"input": {}},
                                    headers=api.as_("alice"))
    assert started.status_code == 201, started.text
    return str(started.json()["run_id"])


async def test_a_run_driven_by_notify_shows_in_every_family(api: Harness) -> None:
    before = await scrape(api)
    # polls every 30 s: a run that finishes well within that was moved by NOTIFY alone
    async with engine_and_worker(api, poll_s=30):
        run_id = await start_run(api)

        async def ended() -> bool:
            status = (await support.detail(api.svc, UUID(run_id))).run.status
            return status is RunStatus.SUCCEEDED

        await support.wait_for(ended, timeout=20, what="the run to succeed")

        async def observed() -> bool:  # a completion's end is observed by a poll
            return not await support.end_unobserved(api.svc, UUID(run_id))

        await support.wait_for(observed, timeout=10, what="the run's end to be observed")
        # the reaper polls every 50 ms and has no NOTIFY: its waits all end by the clock
        await support.wait_for(
            lambda: _reaper_polled(api, before), timeout=10, what="a reaper poll")
    after = await scrape(api)

    # the database's state, read at scrape time (the names dashboards already use)
    assert value(after, "warden_runs", status="succeeded") == 1
    assert value(after, "warden_jobs", status="succeeded", topic="t.metrics.a") == 1
    assert value(after, "warden_jobs", status="succeeded", topic="t.metrics.b") == 2
    assert value(after, "warden_approvals_pending") == 0
    assert value(after, "warden_approvals_pending_oldest_seconds") == 0
    assert {"warden_jobs_unclaimed", "warden_oldest_claimable_seconds"}.isdisjoint(
        families(after))  # nothing left claimable: no topic to report

    # claim latency and job durations: one observation per claimed job, by topic
    for topic, claimed in (("t.metrics.a", 1), ("t.metrics.b", 2)):
        for histogram in ("warden_claim_latency_seconds", "warden_job_duration_seconds"):
            count = f"{histogram}_count"
            assert value(after, count, topic=topic) - value(before, count, topic=topic) \
                == claimed, (histogram, topic)
        waited = (value(after, "warden_claim_latency_seconds_sum", topic=topic)
                  - value(before, "warden_claim_latency_seconds_sum", topic=topic))
        assert 0 <= waited < 20 * claimed
    assert (value(after, "warden_run_duration_seconds_count", status="succeeded")
            - value(before, "warden_run_duration_seconds_count", status="succeeded")) == 1
    took = (value(after, "warden_run_duration_seconds_sum", status="succeeded")
            - value(before, "warden_run_duration_seconds_sum", status="succeeded"))
    assert 0 < took < 20

    # wake-ups: the scheduler and the worker were woken by NOTIFY, never by their poll
    for loop in ("scheduler", "worker"):
        woke = (value(after, "warden_wakeups_total", loop=loop, cause="notify")
                - value(before, "warden_wakeups_total", loop=loop, cause="notify"))
        polled = (value(after, "warden_wakeups_total", loop=loop, cause="poll")
                  - value(before, "warden_wakeups_total", loop=loop, cause="poll"))
        assert (woke >= 1, polled) == (True, 0), loop
    assert value(after, "warden_wakeups_total", loop="reaper", cause="notify") == 0
    # a process metric comes with the registry
    assert "process_cpu_seconds_total" in families(after)


async def _reaper_polled(api: Harness, before: Samples) -> bool:
    now = await scrape(api)
    return (value(now, "warden_wakeups_total", loop="reaper", cause="poll")
            > value(before, "warden_wakeups_total", loop="reaper", cause="poll"))


async def test_an_expired_lease_counts_as_a_reaper_action(api: Harness) -> None:
    await start_run(api)
    await support.settle(api.scheduler)
    before = await scrape(api)
    [job] = await support.claim(api.svc.db, list(TOPICS), lease_s=0.05)
    reaper = Reaper(api.svc.db)

    async def reaped() -> int:
        return (await reaper.run_once()).jobs

    assert await support.wait_for(reaped, timeout=10, what="the lease to be reaped") == 1
    after = await scrape(api)
    assert (value(after, "warden_reaper_actions_total", action="lease_expired")
            - value(before, "warden_reaper_actions_total", action="lease_expired")) == 1
    assert (value(after, "warden_reaper_actions_total", action="approval_expired")
            == value(before, "warden_reaper_actions_total", action="approval_expired"))
    assert value(after, "warden_jobs", status="timed_out", topic=job.topic) == 1


async def test_a_reconciler_repair_counts_by_what_it_did(api: Harness) -> None:
    await start_run(api)
    await support.settle(api.scheduler)
    before = await scrape(api)
    # a dispatch timeout of zero: the claimable job is "unclaimed for too long" at once
    repairs = await Reconciler(api.svc, dispatch_timeout=timedelta(0)).run_once()
    assert repairs.unclaimed == 1 and repairs.total == 1
    after = await scrape(api)
    for action, done in (("unclaimed", 1), ("deadlines", 0), ("flagged", 0), ("stalled", 0)):
        assert (value(after, "warden_reconciler_repairs_total", action=action)
                - value(before, "warden_reconciler_repairs_total", action=action)) == done
    assert value(after, "warden_jobs_unclaimed", topic="t.metrics.a") == 0  # 5 min default

    # the oldest claimable job's age is the database's now() - available_at, read at the
    # scrape: set it two minutes back and the gauge lies between two readings around it
    age = "SELECT extract(epoch FROM now() - available_at)::float8 FROM warden.jobs " \
          "WHERE topic = 't.metrics.a' AND status = 'pending'"
    await _sql(api, "UPDATE warden.jobs SET available_at = now() - interval '120 s' "
                    "WHERE topic = 't.metrics.a' AND status = 'pending'")
    [(low,)] = await _sql(api, age)
    scraped = value(await scrape(api), "warden_oldest_claimable_seconds", topic="t.metrics.a")
    [(high,)] = await _sql(api, age)
    assert 120 <= low <= scraped <= high < 130, (low, scraped, high)


async def test_table_health_shows_dead_tuples_and_an_old_open_transaction(
        api: Harness, db_url: str) -> None:
    before = await scrape(api)
    counted_before = await _row_counts(api)
    await start_run(api)
    await support.settle(api.scheduler)
    [job] = await support.claim(api.svc.db, list(TOPICS))
    await support.complete(api.svc.db, job)  # two updates of the job row: dead tuples

    async def dead_jobs() -> float:
        return value(await scrape(api), "warden_table_dead_tuples", table="jobs")

    # the statistics are flushed by each backend within about a second of going idle
    assert await support.wait_for(dead_jobs, timeout=15, what="dead tuples of jobs") > 0
    samples = await scrape(api)
    for table in HOT_TABLES:
        assert ("warden_table_dead_tuples", frozenset({("table", table)})) in samples

    # live tuples grew by exactly the rows the run added (nothing was deleted), once every
    # backend has flushed its statistics
    async def live_grew_by_the_rows_added() -> dict[str, int] | None:
        counted = await _row_counts(api)
        added = {t: n - counted_before[t] for t, n in counted.items()}
        now = await scrape(api)
        live = {t: value(now, "warden_table_live_tuples", table=t) for t in HOT_TABLES}
        grew = {t: live[t] - value(before, "warden_table_live_tuples", table=t)
                for t in HOT_TABLES}
        # a fresh database: the estimate is exact, the rows themselves
        return added if grew == added and live == counted else None

    added = await support.wait_for(live_grew_by_the_rows_added, timeout=15,
                                   what="live tuples to match the rows added")
    assert added["runs"] == 1 and added["steps"] == 3 and added["jobs"] == 1
    assert added["timeline"] >= 5

    holder = await connect(db_url, autocommit=False)
    try:
        await holder.execute("SELECT 1")  # a transaction is open from here until rollback

        async def held_open() -> float:
            age = value(await scrape(api), "warden_oldest_transaction_seconds")
            return age if age >= 0.3 else 0

        assert await support.wait_for(held_open, timeout=10, what="an old transaction") < 10
        await holder.rollback()

        async def none_old() -> bool:
            return value(await scrape(api), "warden_oldest_transaction_seconds") < 0.3

        await support.wait_for(none_old, timeout=10, what="the transaction to end")
    finally:
        await holder.close()


HOT_TABLES = ("jobs", "runs", "steps", "timeline")


async def _sql(api: Harness, query: str) -> list[tuple[Any, ...]]:
    async with api.svc.db.connection() as conn:
        cur = await conn.execute(query)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def _row_counts(api: Harness) -> dict[str, int]:
    rows = await _sql(api, "SELECT 'jobs', count(*) FROM warden.jobs UNION ALL "
                           "SELECT 'runs', count(*) FROM warden.runs UNION ALL "
                           "SELECT 'steps', count(*) FROM warden.steps UNION ALL "
                           "SELECT 'timeline', count(*) FROM warden.timeline")
    return {str(t): int(n) for t, n in rows}


async def test_openmetrics_is_served_when_asked_for(api: Harness) -> None:
    response = await api.client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "# TYPE warden_runs gauge" in response.text
