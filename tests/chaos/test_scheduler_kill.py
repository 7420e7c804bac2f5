"""Case 5: SIGKILL the engine (`warden serve`: scheduler, reaper, reconciler) mid-run.

Two `serve` processes share the work; every 1-3 s one of them is SIGKILLed and a new one
started, and every fourth time both die at once and the engine stays away for 2 s. Every
run must finish, each job complete once, and every timeline stay gapless with its hash
chain intact (`warden.verify_timeline`).
"""

from __future__ import annotations

import asyncio
import random
import time
from uuid import UUID

import pytest

from engine.runs.services import Services
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.harness import (
    Deadline,
    audit,
    fan_out_workflow,
    kill,
    log_of,
    open_runs,
    query,
    serve,
    show,
    worker_args,
)

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.sched"
RUNS = 100
WIDTH = 8
MIN_KILLS = 10
STEPS = ["root", *(f"f{i}" for i in range(1, WIDTH + 1)), "join"]


async def test_killing_the_engine_mid_run_leaves_no_gap_and_loses_no_run(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(180)
    rng = random.Random(55)
    await support.store(svc.db, fan_out_workflow("sched", TOPIC, width=WIDTH))
    chaos.procs.env.update(WARDEN_LEASE_MS="3000", WARDEN_POLL_INTERVAL_MS="200")
    engines = [serve(chaos.procs) for _ in range(2)]
    for _ in range(2):
        chaos.procs.warden(*worker_args([TOPIC], "tests.chaos.handlers:work", concurrency=8))
    run_ids: list[UUID] = []

    async def submit() -> None:
        for i in range(RUNS):  # over ~20 s, so the kills meet runs at every stage
            run = await support.start(svc, "sched", {"marks": str(chaos.marks), "i": i,
                                                     "sleep_s": [0.1, 0.4]})
            run_ids.append(run.run_id)
            await asyncio.sleep(0.2)

    kills = 0
    kill_times: list[float] = []

    async def kill_engines() -> None:
        nonlocal engines, kills
        for proc in engines:  # none may die but by our hand
            assert proc.poll() is None, (f"serve exited {proc.returncode} by itself:\n"
                                         + log_of(chaos.procs, proc)[-2000:])
        kill_times.append(time.time())
        if len(kill_times) % 4 == 0:  # no engine at all for a while
            for proc in engines:
                kill(proc)
            kills += len(engines)
            await asyncio.sleep(2)
            engines = [serve(chaos.procs) for _ in range(2)]
        else:
            victim = engines.pop(rng.randrange(len(engines)))
            kill(victim)
            kills += 1
            engines.append(serve(chaos.procs))

    submitting = asyncio.create_task(submit())
    try:
        while (not submitting.done() or kills < MIN_KILLS
               or await open_runs(chaos.url, deadline) > 0):
            deadline.check(f"the runs to finish ({kills} engine kills so far)")
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            await kill_engines()
    finally:
        submitting.cancel()
    submitting.result()
    seen = await audit(chaos.url, chaos.marks, run_ids, STEPS, deadline)
    [(gapped,)] = await query(chaos.url, """
        SELECT count(*) FROM (SELECT run_id FROM warden.timeline GROUP BY run_id
                               HAVING min(seq) <> 1 OR max(seq) <> count(*)) AS g""")
    [(broken,)] = await query(chaos.url, "SELECT count(*) FROM warden.runs "
                                         "WHERE NOT warden.verify_timeline(run_id)")
    [(unended,)] = await query(chaos.url, """
        SELECT count(*) FROM warden.runs r WHERE (SELECT t.kind FROM warden.timeline t
         WHERE t.run_id = r.run_id ORDER BY t.seq DESC LIMIT 1) <> 'run.succeeded'""")
    [(repairs,)] = await query(chaos.url, "SELECT count(*) FROM warden.timeline "
                                          "WHERE kind = 'reconciler.repaired'")
    spans = await query(chaos.url, "SELECT created_at, finished_at FROM warden.runs")
    recovered = sum(1 for created, finished in spans if finished is not None and any(
        created.timestamp() < at < finished.timestamp() for at in kill_times))
    figures = seen.figures(len(run_ids), recovered, engine_kills=kills,
                           timeline_gaps=gapped, broken_chains=broken,
                           reconciler_repairs=repairs)
    show(capsys, "scheduler_kill", figures)

    seen.assert_clean()
    assert gapped == 0
    assert broken == 0
    assert unended == 0  # each timeline ends with run.succeeded, nothing after it
