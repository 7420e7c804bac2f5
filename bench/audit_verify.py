"""Time to verify the keyed chains of many runs, as `warden audit verify` does.

    .venv/bin/python bench/audit_verify.py [--runs 10000] [--steps 9] [--reps 3]

Starts ``--runs`` runs of a workflow of ``--steps`` job steps through the batch start (1,000
per call), so each run's chain holds its run.created and one policy.decision per step
(``--steps`` + 1 events, every one signed by warden.append_events_for_runs). Then times
`engine.runs.timeline.check` over every run (what `warden audit verify` runs: one pass
over the timeline recomputing each HMAC under its key), ``--reps`` times. Prints one JSON
document. Uses its own database, like bench/run.py (WARDEN_BENCH_DATABASE_URL, default
the local server), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from bench.databases import BenchDatabases
from engine.definitions import workflows
from engine.governance.policy import Verdict
from engine.runs import lifecycle, timeline
from engine.runs.services import Services
from engine.store import Database


def _workflow(steps: int) -> str:
    lines = ["id: audit-bench", "name: audit verify bench", "version: 1.0.0", "steps:"]
    lines += [f"  s{i}: {{type: job, topic: bench.audit}}" for i in range(steps)]
    return "\n".join(lines) + "\n"


async def _start(svc: Services, runs: int) -> float:
    began = time.perf_counter()
    for first in range(0, runs, lifecycle.MAX_BATCH):
        items = [lifecycle.StartItem({"n": n})
                 for n in range(first, min(first + lifecycle.MAX_BATCH, runs))]
        results = await lifecycle.start_many(svc, tenant_id="default",
                                             workflow_id="audit-bench", created_by="bench",
                                             items=items)
        failed = [r for r in results if r.error is not None]
        if failed:
            raise SystemExit(f"{len(failed)} runs did not start: {failed[0].error}")
    return time.perf_counter() - began


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    dbs = BenchDatabases.for_this_process()
    try:
        await dbs.prepare()
        url = await dbs.fresh(from_seed=False)
        async with Database(url, max_size=4) as db:
            svc = Services.create(db, policy_default=Verdict.ALLOW)
            await workflows.store(db, tenant_id="default", media_type=None,
                                  created_by="bench", source=_workflow(args.steps))
            started_s = await _start(svc, args.runs)
            times = []
            for _ in range(args.reps):
                began = time.perf_counter()
                checked, broken = await timeline.check(db, None)
                times.append(time.perf_counter() - began)
                if checked != args.runs or broken:
                    raise SystemExit(f"checked {checked} runs, {len(broken)} broken")
        events = args.runs * (args.steps + 1)
        print(json.dumps({
            "runs": args.runs, "events": events, "reps": args.reps,
            "start_s": round(started_s, 3),
            "verify_s": {"median": round(statistics.median(times), 3),
                         "min": round(min(times), 3), "max": round(max(times), 3)},
            "verify_us_per_event": round(statistics.median(times) / events * 1e6, 2),
            "cpus": os.cpu_count()}, indent=2))
    finally:
        await dbs.drop_all()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    asyncio.run(main())
