"""Claim throughput with a concurrency key on versus off, in the same run.

    .venv/bin/python bench/claim_gates.py [--jobs 10000] [--claimers 8] [--batch 10]

Drives warden.claim_jobs and warden.complete_jobs directly (the SQL job protocol every
worker uses) from `--claimers` connections, each claiming up to `--batch` jobs and
completing them at once, until a queue of `--jobs` pending jobs is drained. Scenarios,
each on a queue of its own in one throwaway database, alternated over `--rounds` so drift
on a shared host hits both alike:

- ``off``: no gate (the claim's plain lane);
- ``on``: every job carries one concurrency key whose limit (1,000) never binds, so the
  difference is the gate's cost: the stripe locks, the running counts, the bookkeeping;
- ``on_tight``: the same key with a limit of claimers x batch (80 by default), which
  binds now and then (jobs stay running while their completion is on its way);
- ``on_binding``: the same key with a limit of 8, which does bind (reported for scale:
  at most 8 jobs in flight, whatever the claimers);
- ``tenants_100``: no gate, the same number of jobs spread over 100 tenants: the cost of
  fair tenants (a claim probes every tenant's lane of its topic).

Prints one JSON document (jobs/s per scenario and round, and on/off). The server is
WARDEN_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres); the
database warden_bench_gates_<pid> is created, migrated and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.databases import admin_url
from bench.pg import with_database
from engine.store import migrate
from engine.store.sqlfiles import NamedQuery, parse_file

TENANT = "bench"


@cache
def _queries() -> dict[str, NamedQuery]:
    return {q.name: q for q in parse_file(Path(__file__).with_name("gates.sql"))}


def q(name: str) -> str:
    return _queries()[name].sql


async def _claimer(url: str, topic: str, batch: int, stats: list[int]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        empty = 0
        while empty < 20:
            cur = await conn.execute(q("gates_claim"), {"topics": [topic], "worker": "bench",
                                                        "max_jobs": batch})
            claimed = await cur.fetchall()
            if not claimed:
                empty += 1
                await asyncio.sleep(0.005)
                continue
            empty = 0
            await conn.execute(q("gates_complete"), {
                "job_ids": [r[0] for r in claimed], "tokens": [r[1] for r in claimed],
                "results": [psycopg.types.json.Jsonb({})] * len(claimed)})
            stats.append(len(claimed))


async def drain(url: str, *, topic: str, key: str, limit: int, jobs: int, claimers: int,
                batch: int, tenants: int = 1) -> dict[str, Any]:
    steps = 10
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for n in range(tenants):
            tenant = TENANT if tenants == 1 else f"{TENANT}-{n}"
            await conn.execute(q("gates_workflow"), {"tenant": tenant})
            await conn.execute(q("gates_seed_runs"), {
                "tenant": tenant, "runs": jobs // steps // tenants, "steps": steps,
                "topic": topic, "key": key, "limit": limit})
        await conn.execute(q("gates_analyze"))
    done: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(*(_claimer(url, topic, batch, done) for _ in range(claimers)))
    # the idle tail (20 empty polls per claimer) is not drain time
    elapsed = time.perf_counter() - started
    total = sum(done)
    return {"jobs": total, "seconds": round(elapsed, 2), "jobs_per_s": round(total / elapsed, 1),
            "mean_batch": round(total / len(done), 2) if done else 0}


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    admin = admin_url()
    name = f"warden_bench_gates_{os.getpid()}"
    url = with_database(admin, name)
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(sql.SQL(q("gates_create_database")).format(db=sql.Identifier(name)))
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(q("gates_workflow"), {"tenant": TENANT})
            await conn.execute(q("gates_grant"))
        scenarios = {"off": ("", 0, 1), "on": ("provider", 1000, 1),
                     "on_tight": ("provider", args.claimers * args.batch, 1),
                     "on_binding": ("provider", 8, 1), "tenants_100": ("", 0, 100)}
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
        for round_no in range(args.rounds):
            for scenario, (key, limit, tenants) in scenarios.items():
                print(f"round {round_no + 1}: {scenario}", file=sys.stderr)
                results[scenario].append(await drain(
                    url, topic=f"t.{scenario}.{round_no}", key=key, limit=limit,
                    jobs=args.jobs, claimers=args.claimers, batch=args.batch,
                    tenants=tenants))
    finally:
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(sql.SQL(q("gates_drop_database")).format(
                db=sql.Identifier(name)))
    best = {s: statistics.median(r["jobs_per_s"] for r in rs) for s, rs in results.items()}
    print(json.dumps({"params": vars(args), "results": results,
                      "median_jobs_per_s": best,
                      "on_vs_off": round(best["on"] / best["off"], 3),
                      "tenants_100_vs_off": round(best["tenants_100"] / best["off"], 3),
                      "cpu_count": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
