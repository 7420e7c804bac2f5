"""Dispatch cost of a for_each step: from the step becoming ready to every item claimable.

    .venv/bin/python bench/for_each_dispatch.py [--items 1000] [--reps 5]

A run `gen -> each` where `each` has `for_each: ${steps.gen.output.items}` and
`max_parallel` = the number of items. `gen` is completed with the list (which wakes the
run); the clock then covers the one scheduler pass that makes `each` ready, renders and
evaluates every item under the policy, and commits the items, decisions, jobs and events;
a claim of every item follows (outside the clock) to check they all are claimable.
Prints one JSON document (seconds). Uses its own database, like bench/run.py
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
from datetime import timedelta

from bench.databases import BenchDatabases
from engine.definitions import workflows
from engine.governance.policy import Verdict
from engine.runs import lifecycle
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q

WORKFLOW = """
id: fan-bench
name: for_each dispatch bench
version: 1.0.0
steps:
  gen: {{type: job, topic: bench.gen}}
  each:
    type: job
    topic: bench.item
    depends_on: [gen]
    for_each: "${{steps.gen.output.items}}"
    max_parallel: {n}
    input: {{host: "${{item.host}}", n: "${{item_index}}"}}
"""


async def _one(db: Database, svc: Services, scheduler: Scheduler, n: int) -> float:
    run = (await lifecycle.start(svc, tenant_id="default", workflow_id="fan-bench", input={},
                                 created_by="bench")).run
    while await scheduler.run_once():
        pass
    async with db.connection() as conn:
        [gen] = await jobs_q.claim(conn, topics=["bench.gen"], worker="bench", max_jobs=1,
                                   lease=timedelta(seconds=60))
        await jobs_q.complete(conn, job_id=gen.job_id, lease_token=gen.lease_token,
                              result={"items": [{"host": f"h{i}"} for i in range(n)]})
    began = time.perf_counter()
    while await scheduler.run_once():
        pass
    took = time.perf_counter() - began
    async with db.connection() as conn:
        claimed = await jobs_q.claim(conn, topics=["bench.item"], worker="bench",
                                     max_jobs=n + 1, lease=timedelta(seconds=60))
    if len(claimed) != n or {c.run_id for c in claimed} != {run.run_id}:
        raise SystemExit(f"expected {n} claimable items of the run, got {len(claimed)}")
    return took


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    dbs = BenchDatabases.for_this_process()
    try:
        await dbs.prepare()
        url = await dbs.fresh(from_seed=False)
        async with Database(url, max_size=4) as db:
            svc = Services.create(db, policy_default=Verdict.ALLOW)
            await workflows.store(db, tenant_id="default", media_type=None,
                                  created_by="bench", source=WORKFLOW.format(n=args.items))
            scheduler = Scheduler(svc)
            times = [await _one(db, svc, scheduler, args.items) for _ in range(args.reps)]
        print(json.dumps({
            "items": args.items, "reps": args.reps,
            "ready_to_all_claimable_s": {"median": round(statistics.median(times), 4),
                                         "min": round(min(times), 4),
                                         "max": round(max(times), 4)},
            "per_item_ms": round(statistics.median(times) / args.items * 1000, 4),
            "cpus": os.cpu_count()}, indent=2))
    finally:
        await dbs.drop_all()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    asyncio.run(main())
