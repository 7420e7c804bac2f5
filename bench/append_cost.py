"""What one timeline event costs in `warden.append_events_for_runs`, the hot path's writer.

    .venv/bin/python bench/append_cost.py [--runs 2000] [--per-call 32] [--events 2] [--calls 200]

Starts ``--runs`` one-step runs through the batch start, then times ``--calls`` calls of
warden.append_events_for_runs, each appending ``--events`` job.succeeded-shaped events to
each of ``--per-call`` runs (the shape of a worker's completion batch), one transaction
per call as a completer commits. Prints one JSON document with µs per event and per call,
and the server-side time (pg_stat_user_functions). Own database, like bench/run.py
(WARDEN_BENCH_DATABASE_URL, default the local server), dropped at the end.
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

from psycopg.types.json import Jsonb


async def main() -> None:
    from bench.databases import BenchDatabases
    from engine.definitions import workflows
    from engine.governance.policy import Verdict
    from engine.runs import lifecycle
    from engine.runs.services import Services
    from engine.store import Database

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--per-call", type=int, default=32)
    parser.add_argument("--events", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    dbs = BenchDatabases.for_this_process()
    try:
        await dbs.prepare()
        url = await dbs.fresh(from_seed=False)
        async with Database(url, max_size=2) as db:
            svc = Services.create(db, policy_default=Verdict.ALLOW)
            await workflows.store(db, tenant_id="default", media_type=None, created_by="bench",
                                  source="id: append-bench\nname: append bench\n"
                                         "version: 1.0.0\nsteps:\n"
                                         "  a: {type: job, topic: bench.append}\n")
            for first in range(0, args.runs, lifecycle.MAX_BATCH):
                await lifecycle.start_many(
                    svc, tenant_id="default", workflow_id="append-bench", created_by="bench",
                    items=[lifecycle.StartItem({"n": n}) for n in
                           range(first, min(first + lifecycle.MAX_BATCH, args.runs))])
            async with db.connection() as conn:
                cur = await conn.execute("SELECT tenant_id, run_id FROM warden.runs "
                                         "ORDER BY run_id")
                runs = await cur.fetchall()
                await conn.execute("SET track_functions = 'pl'")
                await conn.execute("SELECT pg_stat_reset()")
                times = []
                for call in range(args.calls):
                    first = call * args.per_call % max(len(runs) - args.per_call, 1)
                    batch: list[dict[str, Any]] = [
                        {"tenant_id": tenant, "run_id": str(run_id), "events": [
                            {"kind": "job.succeeded", "step_id": "a",
                             "job_id": f"{run_id}:a@{call}.{e}", "attempt": 1,
                             "actor": "bench-worker", "data": {}}
                            for e in range(args.events)]}
                        for tenant, run_id in runs[first:first + args.per_call]]
                    began = time.perf_counter()
                    await conn.execute("SELECT warden.append_events_for_runs(%s)", [Jsonb(batch)])
                    await conn.commit()
                    times.append(time.perf_counter() - began)
                await conn.execute("SELECT pg_stat_force_next_flush()")
                cur = await conn.execute(
                    "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
                    "WHERE schemaname = 'warden' ORDER BY total_time DESC")
                functions = {name: {"calls": calls, "total_ms": round(total, 1),
                                    "self_ms": round(own, 1)}
                             for name, calls, total, own in await cur.fetchall()}
        events = args.per_call * args.events
        per_call = statistics.median(times)
        print(json.dumps({
            "runs": args.runs, "per_call_runs": args.per_call, "events_per_run": args.events,
            "calls": args.calls,
            "call_ms": {"median": round(per_call * 1e3, 3),
                        "p90": round(sorted(times)[int(len(times) * 0.9)] * 1e3, 3)},
            "us_per_event": round(per_call / events * 1e6, 1),
            "functions": functions, "cpus": os.cpu_count()}, indent=2))
    finally:
        await dbs.drop_all()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    asyncio.run(main())
