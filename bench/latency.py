"""Measurements 2 and 3: latency against an idle-waiting serve + worker (NOTIFY wake-up).

Runs are started at a steady rate from the bench process once the children hold their
LISTEN connections and have gone quiet; every latency is computed in SQL from database
timestamps (jobs, runs and the timeline), never from the bench's clock.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

from bench import monitor, pg
from bench.plan import IDLE_SETTLE_S, READY_TIMEOUT_S, Bench
from bench.workload import Shape, Starter, chain, one_step


async def claim_latency(bench: Bench, rate: float,
                        starter_class: type[Starter] = Starter) -> dict[str, Any]:
    """Enqueue → claim: one-step runs started at ``rate`` per second (``starter_class``: a
    Starter that also watches each start, bench/enqueue_stages.py)."""
    shape = one_step(int(rate * bench.plan.latency_seconds))
    result = await _paced(bench, shape, rate, f"claim-latency-{rate:g}", starter_class)
    result["latency"] = await _query(bench, "claim_latency")
    result["starts"]["created_per_s"] = (await _query(bench, "created_rate"))["created_per_s"]
    return result


async def step_latency(bench: Bench) -> dict[str, Any]:
    """Step → step: 5-step chains (a → b → c → d → e)."""
    shape = chain(bench.plan.chains)
    result = await _paced(bench, shape, bench.plan.chain_rate, "step-latency")
    result["latency"] = await _query(bench, "step_latency")
    result["run_duration"] = await _query(bench, "run_duration")
    return result


async def _paced(bench: Bench, shape: Shape, rate: float, label: str,
                 starter_class: type[Starter] = Starter) -> dict[str, Any]:
    url = await bench.dbs.fresh(from_seed=False)
    conn = await pg.connect(url)
    loop = asyncio.get_running_loop()
    try:
        async with starter_class(url, bench.plan.enqueue_concurrency,
                                 start_dispatch=bench.plan.start_dispatch) as starter:
            await starter.store(shape)
            with bench.children(label) as kids:
                kids.serve()
                kids.worker(bench.plan.worker_concurrency)
                await kids.wait_ready(conn, READY_TIMEOUT_S)
                await asyncio.sleep(IDLE_SETTLE_S)
                started = await starter.start_paced(shape, rate)
                left = await monitor.wait_drained(
                    conn, deadline=loop.time() + bench.plan.drain_timeout_s,
                    check=kids.check_alive)
    finally:
        await conn.close()
    return {"workflow": shape.workflow_id, "workers": 1, "serves": 1,
            "worker_concurrency": bench.plan.worker_concurrency, "starts": started,
            "drained": left == 0}


async def _query(bench: Bench, name: str) -> dict[str, Any]:
    conn = await pg.connect(bench.dbs.url)
    try:
        row = await pg.one(conn, name)
    finally:
        await conn.close()
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def percentiles(samples_s: list[float]) -> dict[str, Any]:
    """p50/p99/max in ms of latencies measured outside SQL, with the interpolation of
    SQL's percentile_cont (which the measurements above use)."""
    if len(samples_s) < 2:
        return {"samples": len(samples_s)}
    ms = sorted(s * 1000 for s in samples_s)
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"samples": len(ms), "p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2),
            "max_ms": round(ms[-1], 2)}
