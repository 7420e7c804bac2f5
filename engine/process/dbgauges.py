"""Gauges read from the database at scrape time: the state every engine process shares.

Made afresh for each scrape (never registered anywhere), so any number of `warden serve`
processes report the same values and nothing goes stale between scrapes. The names are
the ones dashboards already use; `engine.process.metrics` holds what each process counts itself.
"""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from engine.store import Conn, Database, gates, health, workers

AT_SCRAPE = " Read from the database at scrape time."


async def read(db: Database, *, unclaimed_after: timedelta) -> list[Metric]:
    async with db.connection() as conn:
        return await _read(conn, unclaimed_after)


async def _read(conn: Conn, unclaimed_after: timedelta) -> list[Metric]:
    jobs = GaugeMetricFamily("warden_jobs", "Jobs by status and topic." + AT_SCRAPE,
                             labels=["status", "topic"])
    for row in await health.jobs_by_state(conn):
        jobs.add_metric([row["status"], row["topic"]], row["n"])
    runs = GaugeMetricFamily("warden_runs", "Runs by status." + AT_SCRAPE, labels=["status"])
    for row in await health.runs_by_status(conn):
        runs.add_metric([row["status"]], row["n"])
    pending = await health.approvals_pending(conn)
    return [
        jobs, runs,
        GaugeMetricFamily("warden_approvals_pending",
                          "Approvals awaiting a decision." + AT_SCRAPE, value=pending["n"]),
        GaugeMetricFamily("warden_approvals_pending_oldest_seconds",
                          "Age of the oldest pending approval, 0 if none." + AT_SCRAPE,
                          value=float(pending["oldest_age_s"])),
        *await _claimable(conn, unclaimed_after),
        *await _tables(conn),
        *await _gates(conn),
    ]


async def _claimable(conn: Conn, unclaimed_after: timedelta) -> list[Metric]:
    unclaimed = GaugeMetricFamily(
        "warden_jobs_unclaimed",
        "Claimable jobs nobody claimed within the dispatch timeout, by topic." + AT_SCRAPE,
        labels=["topic"])
    oldest = GaugeMetricFamily(
        "warden_oldest_claimable_seconds",
        "Age of the oldest claimable job (since available_at), by topic." + AT_SCRAPE,
        labels=["topic"])
    for row in await health.unclaimed(conn, unclaimed_after):
        unclaimed.add_metric([row["topic"]], row["unclaimed"])
        oldest.add_metric([row["topic"]], float(row["oldest_age_s"]))
    unattended = GaugeMetricFamily(
        "warden_jobs_unattended",
        "Pending jobs of a topic that no live registered worker polls (work nobody will "
        "take), by topic; present from the first second, unlike warden_jobs_unclaimed."
        + AT_SCRAPE, labels=["topic"])
    for row in await workers.unattended(conn):
        unattended.add_metric([row["topic"]], row["n"])
    return [unclaimed, oldest, unattended]


async def _gates(conn: Conn) -> list[Metric]:
    """Flow control (docs/workflows.md#concurrency-and-rate-limits): how full each gate is,
    and the jobs it holds back right now."""
    labels = ["tenant", "key"]
    running = GaugeMetricFamily("warden_concurrency_running", "Running jobs per tenant and "
                                "concurrency key." + AT_SCRAPE, labels=labels)
    limit = GaugeMetricFamily("warden_concurrency_limit", "The limit of a concurrency key "
                              "(the smallest its jobs carry)." + AT_SCRAPE, labels=labels)
    claims = GaugeMetricFamily("warden_rate_claims_in_window", "Claims per tenant and rate "
                               "key inside the key's window." + AT_SCRAPE, labels=labels)
    rate = GaugeMetricFamily("warden_rate_limit", "Claims a rate key allows per window."
                             + AT_SCRAPE, labels=labels)
    throttled = GaugeMetricFamily(
        "warden_throttled_jobs", "Pending jobs held back because their concurrency key or "
        "rate limit is full, by kind (concurrency|rate)." + AT_SCRAPE,
        labels=["kind", *labels])
    for row in await gates.load(conn):
        used, cap = (running, limit) if row.kind == "concurrency" else (claims, rate)
        used.add_metric([row.tenant_id, row.key], row.in_use)
        cap.add_metric([row.tenant_id, row.key], row.limit)
        throttled.add_metric([row.kind, row.tenant_id, row.key],
                             row.waiting if row.in_use >= row.limit else 0)
    return [running, limit, claims, rate, throttled]


async def _tables(conn: Conn) -> list[Metric]:
    dead = GaugeMetricFamily(
        "warden_table_dead_tuples",
        "Dead tuples of a warden table (pg_stat_user_tables estimate): vacuum's backlog."
        + AT_SCRAPE, labels=["table"])
    live = GaugeMetricFamily(
        "warden_table_live_tuples",
        "Live tuples of a warden table (pg_stat_user_tables estimate)." + AT_SCRAPE,
        labels=["table"])
    for row in await health.table_health(conn):
        dead.add_metric([row["table_name"]], row["dead"])
        live.add_metric([row["table_name"]], row["live"])
    oldest = GaugeMetricFamily(
        "warden_oldest_transaction_seconds",
        "Age of the oldest open transaction in this database but the scrape's own, 0 if "
        "none; it holds back vacuum (other roles' need pg_read_all_stats)." + AT_SCRAPE,
        value=await health.oldest_transaction_s(conn))
    return [dead, live, oldest]
