"""Case 1: a SIGKILL storm on the workers.

2,000 jobs (200 runs of a 10-step fan-out: root → 8 in parallel → join); a random worker
process is SIGKILLed every 1-3 s and a new one started. Nothing may be lost or completed
twice (by the handlers' own record and by Warden's tables, see tests/chaos/harness.py),
and only work in flight on a killed process may run again: re-executions <= kills x
concurrency.
"""

from __future__ import annotations

import asyncio
import random
from uuid import UUID

import pytest

from engine.runs.services import Services
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    Deadline,
    Fleet,
    audit,
    fan_out_workflow,
    open_runs,
    query,
    recovered_steps,
    serve,
    show,
    steps_without_success,
    worker_args,
)

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.storm"
RUNS = 200
WIDTH = 8  # + root + join = 10 job steps per run
WORKERS = 3
CONCURRENCY = 8
LEASE_MS = 2000
MIN_KILLS = 12
STEPS = ["root", *(f"f{i}" for i in range(1, WIDTH + 1)), "join"]


async def test_sigkill_storm_loses_nothing_and_completes_each_job_once(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(240)
    rng = random.Random(20261125)
    await support.store(svc.db, fan_out_workflow("storm", TOPIC, width=WIDTH))
    chaos.procs.env.update(WARDEN_LEASE_MS=str(LEASE_MS), WARDEN_POLL_INTERVAL_MS="200")
    serve(chaos.procs)
    fleet = Fleet(chaos.procs, worker_args([TOPIC], "tests.chaos.handlers:work",
                                           concurrency=CONCURRENCY), WORKERS).start()

    run_ids: list[UUID] = []

    async def submit() -> None:
        for i in range(RUNS):  # over ~25 s, so the storm meets runs at every stage
            run = await support.start(svc, "storm", {"marks": str(chaos.marks), "i": i,
                                                     "sleep_s": [0.2, 0.6]})
            run_ids.append(run.run_id)
            await asyncio.sleep(0.1)

    submitting = asyncio.create_task(submit())
    try:
        while (not submitting.done() or fleet.kills < MIN_KILLS
               or await open_runs(chaos.url, deadline) > 0):
            deadline.check(f"the storm ({fleet.kills} kills so far)")
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            fleet.replace_dead()  # none may die but by our hand
            fleet.kill_one(rng)
            fleet.start()
    finally:
        submitting.cancel()
    submitting.result()

    seen = await audit(chaos.url, chaos.marks, run_ids, STEPS, deadline)
    [(timed_out,)] = await query(chaos.url, "SELECT count(*) FROM warden.jobs "
                                            "WHERE status = 'timed_out'", deadline=deadline)
    figures = seen.figures(len(run_ids), await recovered_steps(chaos.url, deadline),
                           kills=fleet.kills, timed_out_attempts=timed_out,
                           re_execution_bound=fleet.kills * CONCURRENCY)
    show(capsys, "sigkill_storm", figures)

    seen.assert_clean()
    assert await steps_without_success(chaos.url, deadline) == 0
    assert figures.re_executions <= fleet.kills * CONCURRENCY
    [(jobs_succeeded,)] = await query(chaos.url, "SELECT count(*) FROM warden.jobs "
                                                 "WHERE status = 'succeeded'")
    assert jobs_succeeded == RUNS * (WIDTH + 2)
    # the fan-out and the join were dispatched by completions (every step but the root
    # has a plan under the active snapshot: tests/chaos/conftest.py)
    [(planned,)] = await query(chaos.url, "SELECT count(*) FROM warden.dispatch_plans "
                                          "WHERE workflow_id = 'storm'")
    assert planned == WIDTH + 1
