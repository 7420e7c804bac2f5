"""Enqueue → claim, stage by stage, per run, beside the bench's own clock:

    .venv/bin/python bench/enqueue_stages.py [--rate 20] [--rounds 1]

bench/run.py's claim latency (one-step runs started at ``--rate`` per second against an
idle serve and worker waiting on NOTIFY), with each start call timed by this process's
wall clock, which on one host is the database's clock. Per run:

- ``call → created``: from the call to the start transaction's beginning (the pool's
  checkout, its check of the connection, the request reaching the server);
- ``created → dispatched``: the start's statement up to its job.dispatched event;
- ``dispatched → returned``: the rest of the statement, its commit, and the answer back;
- ``returned → claim began``: the NOTIFY, the worker waking, its checkout, its claim
  reaching the server (negative where the worker claimed before the answer came back);
- ``claim began → claimed``: the claim's statement up to its job.claimed event;
- ``created → claim began``: bench/run.py's enqueue → claim.

Each stage twice: over every start, and without the first start on each of the bench's
pooled connections (which plans the session's statements: 10 to 30 ms, bench/README.md).

Own database, like bench/run.py's (WARDEN_BENCH_DATABASE_URL, default the local server),
dropped at the end. Prints mean, p50, p90, p99 and max in ms of each stage, one JSON
document.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import latency, pg
from bench.databases import BenchDatabases
from bench.plan import Bench, Plan
from bench.workload import TENANT, Shape, Starter
from engine.runs import lifecycle

STAGES = ("call → created", "created → dispatched", "dispatched → returned",
          "returned → claim began", "claim began → claimed", "created → claim began")


class TimedStarter(Starter):
    """A Starter that notes when each start was called and when it returned."""

    calls: ClassVar[dict[UUID, tuple[float, float]]] = {}

    async def start_one(self, shape: Shape) -> None:
        called = time.time()
        started = await lifecycle.start(self.svc, tenant_id=TENANT,
                                        workflow_id=shape.workflow_id, input={},
                                        created_by="bench")
        TimedStarter.calls[started.run.run_id] = (called, time.time())
        self.started.append(started.run.run_id)


def stages(rows: list[dict[str, Any]], calls: dict[UUID, tuple[float, float]],
           skip: int = 0) -> dict[str, list[float]]:
    """Each stage's durations in seconds, leaving out the first ``skip`` starts (in call
    order)."""
    order = {run_id: n for n, run_id in enumerate(calls)}
    out: dict[str, list[float]] = {name: [] for name in STAGES}
    for row in rows:
        if order[row["run_id"]] < skip:
            continue
        called, returned = calls[row["run_id"]]
        marks = (called, row["created"], row["dispatched"], returned)
        for name, (a, b) in zip(STAGES[:3], itertools.pairwise(marks), strict=True):
            out[name].append(b - a)
        out[STAGES[3]].append(row["claim_began"] - returned)
        out[STAGES[4]].append(row["claimed"] - row["claim_began"])
        out[STAGES[5]].append(row["claim_began"] - row["created"])
    return out


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {"mean": round(statistics.mean(ms), 2), "p50": round(statistics.median(ms), 2),
            "p90": round(ms[int(len(ms) * 0.9)], 2), "p99": round(ms[int(len(ms) * 0.99)], 2),
            "max": round(ms[-1], 2)}


async def main(rate: float, rounds: int) -> dict[str, Any]:
    dbs = BenchDatabases.for_this_process()
    bench = Bench(Plan.make(quick=False, profile=False), dbs,
                  Path(tempfile.mkdtemp(prefix="warden-stages-")))
    await dbs.prepare()
    lanes = bench.plan.enqueue_concurrency
    collected: dict[str, list[float]] = {name: [] for name in STAGES}
    warm: dict[str, list[float]] = {name: [] for name in STAGES}
    try:
        for _ in range(rounds):
            TimedStarter.calls.clear()
            await latency.claim_latency(bench, rate, TimedStarter)
            conn = await pg.connect(dbs.url)
            try:
                found = await pg.rows(conn, "enqueue_stages")
            finally:
                await conn.close()
            for name, values in stages(found, TimedStarter.calls).items():
                collected[name].extend(values)
            for name, values in stages(found, TimedStarter.calls, skip=lanes).items():
                warm[name].extend(values)
    finally:
        await dbs.drop_all()
    return {"rate_per_s": rate, "rounds": rounds, "runs": len(collected[STAGES[0]]),
            "stages_ms": {name: summary(values) for name, values in collected.items()},
            # paced starts come back before the next is made, so the pool hands its
            # connections out in turn: the first `lanes` starts are each connection's
            # first, which makes the session's plans (bench/README.md, session 14)
            f"stages_ms_without_the_first_{lanes}": {
                name: summary(values) for name, values in warm.items()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rate, args.rounds)), indent=2, ensure_ascii=False))
