"""What a worker's two calls cost on the server: `warden.claim_jobs` and
`warden.complete_jobs`, per call and per function they run.

    .venv/bin/python bench/worker_calls.py [--runs 3000] [--batch 1] [--rounds 2]
                                           [--fan-out WIDTH]

Starts ``--runs`` one-step runs, or with ``--fan-out`` runs of WIDTH parallel steps
(each start dispatches its run's jobs; the bench's
databases grant the admin role every tenant and topic), then claims them
``--batch`` at a time and completes each claimed batch at once, one transaction per
call as a worker commits, from one connection: no other session shares the server's
CPU, so the figures are the calls' own, without the drains' spread. ``--rounds`` repeats
the whole on a fresh database; the medians of every round are printed. Per function,
the server's own count (pg_stat_user_functions with track_functions = 'all', SQL
functions included): total and self time per call of the worker's function; per index,
the scans and the entries read per job (pg_stat_user_indexes), which is how a walk
that grows with a run's width shows (bench/README.md, session 16). Own
database, like bench/run.py (WARDEN_BENCH_DATABASE_URL, default the local server),
dropped at the end. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from typing import Any


async def queued(dbs: Any, runs: int, width: int | None) -> str:
    """A fresh measurement database (bench/databases.py) with ``runs`` one-step runs, or
    runs of ``width`` parallel steps, started: each start dispatches its run's jobs.
    Returns its URL. bench/statement_times.py fills its queue the same way."""
    from bench.workload import Starter, fan_out, one_step

    url: str = await dbs.fresh(from_seed=False)  # with track_functions on
    shape = one_step(runs) if width is None else fan_out(runs, width)
    async with Starter(url, 4) as starter:
        await starter.store(shape)
        await starter.start_all(shape)
    return url


async def one_cycle(conn: Any, batch: int) -> tuple[int, float, float]:
    """One claim of up to ``batch`` jobs and, if it took any, their completion in one call,
    as a worker's claim loop and completer make them: the jobs claimed, and each call's
    seconds (the completion's 0.0 when the claim found nothing). A refused completion is
    an error: every lease here is fresh."""
    from psycopg.types.json import Jsonb

    from bench import pg
    from bench.children import TOPIC

    began = time.perf_counter()
    claimed = await pg.rows(conn, "worker_claim", {"topics": [TOPIC], "max_jobs": batch})
    claim_s = time.perf_counter() - began
    if not claimed:
        return 0, claim_s, 0.0
    began = time.perf_counter()
    outcomes = await pg.rows(conn, "worker_complete", {
        "job_ids": [r["job_id"] for r in claimed],
        "lease_tokens": [r["lease_token"] for r in claimed],
        "results": [Jsonb({}) for _ in claimed]})
    complete_s = time.perf_counter() - began
    if any(o["outcome"] != "completed" for o in outcomes):
        raise RuntimeError(f"a completion was refused: {outcomes}")
    return len(claimed), claim_s, complete_s


async def one_round(dbs: Any, runs: int, batch: int, width: int | None) -> dict[str, Any]:
    from bench import pg

    url = await queued(dbs, runs, width)
    # the starts' sessions report their counts as they exit: let them, before the reset
    await asyncio.sleep(1.0)
    times: dict[str, list[float]] = {"claim": [], "complete": []}
    conn = await pg.connect(url)
    try:
        await pg.execute(conn, "stats_reset")
        while True:
            claimed, claim_s, complete_s = await one_cycle(conn, batch)
            if not claimed:  # the empty claim that ends the loop is not timed
                break
            times["claim"].append(claim_s)
            times["complete"].append(complete_s)
        await pg.execute(conn, "stats_flush")
        functions = await pg.rows(conn, "function_stats")
        indexes = await pg.rows(conn, "index_stats")
    finally:
        await conn.close()
    calls = len(times["claim"])
    jobs = runs * (width or 1)
    return {
        "calls": calls,
        "claim_ms": statistics.median(times["claim"]) * 1e3,
        "complete_ms": statistics.median(times["complete"]) * 1e3,
        "functions": {f["name"]: {"calls": f["calls"] / calls,
                                  "total_ms": f["total_ms"] / calls,
                                  "self_ms": f["self_ms"] / calls} for f in functions},
        "indexes": {i["name"]: {"scans": i["scans"] / jobs, "entries": i["entries"] / jobs}
                    for i in indexes},
    }


async def main() -> None:
    from bench.databases import BenchDatabases

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--fan-out", type=int, default=None, metavar="WIDTH",
                        help="runs of WIDTH parallel steps instead of one-step runs")
    args = parser.parse_args()
    dbs = BenchDatabases.for_this_process()
    try:
        await dbs.prepare()
        rounds = [await one_round(dbs, args.runs, args.batch, args.fan_out)
                  for _ in range(args.rounds)]
    finally:
        await dbs.drop_all()
    names = sorted({n for r in rounds for n in r["functions"]},
                   key=lambda n: -rounds[0]["functions"].get(n, {}).get("self_ms", 0))
    print(json.dumps({
        "runs": args.runs, "fan_out": args.fan_out, "batch": args.batch,
        "rounds": args.rounds,
        "per_call_ms": {k: round(statistics.median(r[k] for r in rounds), 3)
                        for k in ("claim_ms", "complete_ms")},
        # per call of claim_jobs (one claim and one completion per call)
        "functions": {n: {k: round(statistics.median(
            r["functions"].get(n, {}).get(k, 0.0) for r in rounds), 3)
            for k in ("calls", "total_ms", "self_ms")} for n in names},
        # per job: the scans of each index and the entries they read
        "index_reads_per_job": {n: {k: round(statistics.median(
            r["indexes"].get(n, {}).get(k, 0.0) for r in rounds), 2)
            for k in ("scans", "entries")} for n in sorted(
                {n for r in rounds for n in r["indexes"]},
                key=lambda n: -rounds[0]["indexes"].get(n, {}).get("entries", 0))},
        "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    asyncio.run(main())
