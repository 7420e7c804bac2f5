"""Measurement 1: how fast real processes drain a queue of enqueued runs.

The runs of a shape are enqueued once (through `engine.runs.lifecycle.start`) into the seed
database; each configuration (workers, serves) then drains its own clone of it, timed
from spawning the processes until the poll sees no unfinished run.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from bench import monitor, pg
from bench.children import Children
from bench.cpu import HostCpu, cpu_count, process_cpu_s
from bench.plan import READY_TIMEOUT_S, Bench
from bench.profiler import Profiler
from bench.workload import Shape, Starter

PROFILE_DELAY_S = 2.0


async def enqueue(bench: Bench, shape: Shape) -> dict[str, Any]:
    """Starts every run of the shape into the seed database; returns the enqueue rate."""
    url = await bench.dbs.fresh_seed()
    async with Starter(url, bench.plan.enqueue_concurrency,
                       start_dispatch=bench.plan.start_dispatch) as starter:
        await starter.store(shape)
        stats = await starter.start_all(shape)
    conn = await pg.connect(url)
    try:
        stats["timeline_events"] = (await pg.one(conn, "timeline_count"))["n"]
        stats["events_per_s"] = round(stats["timeline_events"] / stats["seconds"], 1)
        # no ANALYZE here: warden.jobs is still empty, and statistics saying so make the
        # drain's cached plans seq-scan it (autovacuum is left to decide, as in production)
    finally:
        await conn.close()  # a database being cloned must have no connections
    return stats


@dataclass
class Observed:
    """Everything one drain produced, before it is reported."""

    drain_s: float
    left: int
    ready_s: float
    loadavg: float
    window: pg.Row
    host: dict[str, float]
    cpu_s: dict[str, float]
    activity: dict[str, Any]
    profile: dict[str, Any] | None


async def batch_start(bench: Bench, shape: Shape) -> dict[str, Any]:
    """The shape's runs through `lifecycle.start_many` (batch start), into a fresh seed."""
    url = await bench.dbs.fresh_seed()
    async with Starter(url, bench.plan.batch_lanes,
                       start_dispatch=bench.plan.start_dispatch) as starter:
        await starter.store(shape)
        before = await _counters(url)
        stats = await starter.start_batches(shape, bench.plan.batch_size, bench.plan.batch_lanes)
        stats["per_run"] = _per_job(_delta(await _counters(url), before), shape.runs)
    return stats


async def _counters(url: str) -> pg.Row:
    conn = await pg.connect(url)
    try:
        return await pg.one(conn, "db_counters")
    finally:
        await conn.close()


async def drain(bench: Bench, shape: Shape, enqueued: dict[str, Any], *, workers: int,
                serves: int) -> dict[str, Any]:
    url = await bench.dbs.fresh(from_seed=True)
    conn = await pg.connect(url)
    try:
        checkpointed = await pg.try_execute(conn, "checkpoint")
        before = await pg.one(conn, "db_counters")
        seen = await _observe(bench, conn, f"{shape.workflow_id}-{workers}w-{serves}s",
                              workers=workers, serves=serves)
        await pg.wait_for_backends_gone(conn)  # their function statistics are flushed now
        after = await pg.one(conn, "db_counters")
        report = _report(shape, bench, enqueued, seen, await pg.one(conn, "shape_counts"),
                         workers=workers, serves=serves)
        report["per_job"] = _per_job(_delta(after, before), report["jobs_succeeded"])
        report["checkpoint_before"] = checkpointed
        report["sql_functions"] = _functions(await pg.rows(conn, "function_stats"))
        report["tables"] = {str(t.pop("name")): t for t in await pg.rows(conn, "table_stats")}
        return report
    finally:
        await conn.close()


async def _observe(bench: Bench, conn: pg.Conn, label: str, *, workers: int,
                   serves: int) -> Observed:
    loop = asyncio.get_running_loop()
    since = (await pg.one(conn, "db_now"))["now"]
    host_before, loadavg = HostCpu.now(), os.getloadavg()[0]
    activity = monitor.Activity()
    began = loop.time()
    with bench.children(label) as kids:
        for _ in range(serves):
            kids.serve()
        for _ in range(workers):
            kids.worker(bench.plan.worker_concurrency)
        await kids.wait_ready(conn, READY_TIMEOUT_S)
        ready_s = loop.time() - began
        profiler = _start_profiler(bench, kids, label)
        left = await monitor.wait_drained(conn, deadline=began + bench.plan.drain_timeout_s,
                                          activity=activity, check=kids.check_alive)
        drain_s = loop.time() - began
        host = HostCpu.now().since(host_before)
        cpu = {**kids.cpu_seconds(), **await _backend_cpu(conn)}
        profile = await profiler.results() if profiler is not None else None
    return Observed(drain_s=drain_s, left=left, ready_s=ready_s, loadavg=loadavg,
                    window=await pg.one(conn, "drain_window", {"since": since}), host=host,
                    cpu_s=cpu, activity=activity.summary(), profile=profile)


def _start_profiler(bench: Bench, kids: Children, label: str) -> Profiler | None:
    if bench.plan.profile_s is None:
        return None
    # the first serve and the first worker say what each role spends its CPU on; the
    # recording starts once the drain is under way, past the start-up catch-up
    picked = [c for c in kids.started if c.name in ("bench-serve-1", "bench-worker-1")]
    profiler = Profiler(bench.logs / label, bench.plan.profile_s)
    asyncio.get_running_loop().call_later(PROFILE_DELAY_S, profiler.start, picked)
    return profiler


async def _backend_cpu(conn: pg.Conn) -> dict[str, float]:
    """CPU seconds of the server backends each child has open, summed per child."""
    per_child: dict[str, float] = {}
    for row in await pg.rows(conn, "backends"):
        name = str(row["application_name"])
        if name.startswith("bench-"):
            key = f"postgres({name.removeprefix('bench-')})"
            per_child[key] = per_child.get(key, 0.0) + process_cpu_s(int(row["pid"]))
    return per_child


def _report(shape: Shape, bench: Bench, enqueued: dict[str, Any], seen: Observed,
            counts: pg.Row, *, workers: int, serves: int) -> dict[str, Any]:
    jobs_done = int(counts["jobs_succeeded"])
    events = int(counts["timeline_events"]) - int(enqueued["timeline_events"])
    return {
        "workers": workers, "serves": serves,
        "worker_concurrency": bench.plan.worker_concurrency,
        "runs": counts["runs"], "runs_succeeded": counts["runs_succeeded"],
        "job_rows": counts["jobs"], "jobs_succeeded": jobs_done,
        "drained": seen.left == 0, "runs_left": seen.left,
        "drain_s": round(seen.drain_s, 3),
        "jobs_per_s": round(jobs_done / seen.drain_s, 1),
        "runs_per_s": round(int(counts["runs_succeeded"]) / seen.drain_s, 1),
        "startup_s": round(seen.ready_s, 3),
        "first_claim_s": _r(seen.window["first_claim_s"]),
        "last_finish_s": _r(seen.window["last_finish_s"]),
        "timeline_events": counts["timeline_events"],
        "timeline_events_in_drain": events,
        "events_per_s": round(events / seen.drain_s, 1),
        "policy_decisions": counts["policy_decisions"],
        "reconciler_repairs": counts["repairs"],
        "host_cpu": _host_cpu(seen),
        "cpu_s": {name: round(s, 2) for name, s in seen.cpu_s.items()},
        "pg_activity": seen.activity,
        **({"profile": seen.profile} if seen.profile is not None else {}),
    }


def _host_cpu(seen: Observed) -> dict[str, float]:
    """The host's busy share, and how much of it the bench's children and their backends
    account for: the rest is other load on a shared host, which the numbers include."""
    ours = sum(seen.cpu_s.values()) / (seen.drain_s * cpu_count())
    busy = seen.host["busy"]
    return {**seen.host, "children_and_backends": round(ours, 3),
            "other": round(max(0.0, busy - ours), 3), "loadavg_1m_before": round(seen.loadavg, 2)}


def _per_job(counters: dict[str, int], jobs: int) -> dict[str, float]:
    if not jobs:
        return {}
    # every statement of an autocommit connection counts, read-only ones included (the
    # pool's empty-query check on each checkout, the monitor's polls)
    return {"transactions": round(counters["xact_commit"] / jobs, 2),
            "rollbacks": round(counters["xact_rollback"] / jobs, 3),
            "rows_inserted": round(counters["tup_inserted"] / jobs, 1),
            "rows_updated": round(counters["tup_updated"] / jobs, 1),
            "wal_bytes_server_wide": round(counters["wal_bytes"] / jobs),
            "wal_syncs_server_wide": round(counters["wal_sync"] / jobs, 3),
            "deadlocks": counters["deadlocks"]}


def _functions(rows: list[pg.Row], top: int = 8) -> dict[str, Any]:
    return {str(f["name"]): {"calls": f["calls"], "total_ms": _r(f["total_ms"]),
                             "self_ms": _r(f["self_ms"])} for f in rows[:top]}


def _delta(after: pg.Row, before: pg.Row) -> dict[str, int]:
    return {key: int(after[key]) - int(before[key]) for key in after}


def _r(value: Any, digits: int = 2) -> Any:
    return round(float(value), digits) if value is not None else None
