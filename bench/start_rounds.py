"""Single starts as the tables grow: `python bench/start_rounds.py [--rounds N] [--runs N]`.

On a new bench database (created and dropped here, like `bench/run.py`'s): sequential
starts of one one-step run (`lifecycle.start`, as the API makes them; p50/p90 in ms),
then ROUNDS rounds of RUNS starts from 8 lanes at once (runs/s each), then the
sequential starts again. Nothing drains the runs, so every round starts into bigger
tables. A flat series is the aim; a falling one means some statement's cost grows with
the tables (docs/design.md#plans-that-age). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.databases import BenchDatabases
from bench.workload import Shape, Starter, one_step

LANES = 8


async def sequential(starter: Starter, shape: Shape, starts: int) -> dict[str, float]:
    took = []
    for _ in range(starts):
        began = time.perf_counter()
        await starter.start_one(shape)
        took.append((time.perf_counter() - began) * 1000)
    took.sort()
    return {"starts": starts, "p50_ms": round(statistics.median(took), 2),
            "p90_ms": round(took[int(len(took) * 0.9)], 2)}


async def run(rounds: int, runs: int, starts: int) -> dict[str, Any]:
    dbs = BenchDatabases.for_this_process()
    await dbs.prepare()
    try:
        url = await dbs.fresh(from_seed=False)
        shape = one_step(runs)
        async with Starter(url, LANES) as starter:
            await starter.store(shape)
            result: dict[str, Any] = {"lanes": LANES, "runs_per_round": runs,
                                      "sequential_first": await sequential(starter, shape,
                                                                           starts)}
            result["rounds_runs_per_s"] = [
                (await starter.start_all(shape))["runs_per_s"] for _ in range(rounds)]
            result["sequential_last"] = await sequential(starter, shape, starts)
        return result
    finally:
        await dbs.drop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2000, help="starts per round")
    parser.add_argument("--starts", type=int, default=200,
                        help="sequential starts before and after the rounds")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, args.runs, args.starts)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
