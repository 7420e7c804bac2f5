"""Case 2: the worker dies between its side effect and its completion.

The handler applies a side effect keyed by ``job.side_effect_key`` (INSERT … ON CONFLICT
DO NOTHING), and a failpoint then kills the whole process (``os._exit``) before the job is
completed: half of the runs right after the side effect, half after the checkpoint that
follows it. After the lease expires the retry must see the side-effect key (and the
checkpoint, when one was saved), and the side effect must have happened exactly once.
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest

from engine.runs.services import Services
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.handlers import FAILPOINT_EXIT, SIDE_EFFECTS_DDL
from tests.chaos.harness import (
    Deadline,
    Fleet,
    audit,
    open_runs,
    query,
    retries,
    serve,
    show,
    worker_args,
)

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.effect"
RUNS = 12
WORKFLOW = f"""
id: effect
name: effect
version: 1.0.0
steps:
  effect: {{type: job, topic: {TOPIC}, retries: {retries(max_attempts=10, backoff_ms=0)}}}
"""


async def test_a_crash_after_the_side_effect_retries_without_repeating_it(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(120)
    await query(chaos.url, SIDE_EFFECTS_DDL)
    await support.store(svc.db, WORKFLOW)
    chaos.procs.env.update(WARDEN_LEASE_MS="1500", WARDEN_POLL_INTERVAL_MS="200")
    serve(chaos.procs)
    fleet = Fleet(chaos.procs, worker_args([TOPIC], "tests.chaos.handlers:side_effect",
                                           concurrency=2), 2).start()
    die_at: dict[UUID, str] = {}
    for i in range(RUNS):
        where = ("after_effect", "after_checkpoint")[i % 2]
        run = await support.start(svc, "effect", {"marks": str(chaos.marks), "die_at": where})
        die_at[run.run_id] = where

    deaths = 0
    while await open_runs(chaos.url, deadline) > 0:
        deadline.check(f"the runs to finish ({deaths} worker deaths so far)")
        deaths += fleet.replace_dead(expected_code=FAILPOINT_EXIT)
        await asyncio.sleep(0.2)

    seen = await audit(chaos.url, chaos.marks, list(die_at), ["effect"], deadline)
    effects = dict(await query(chaos.url, "SELECT key, job_id FROM chaos.side_effects"))
    fired = sorted(p.name for p in chaos.marks.glob("fired-*"))
    outputs = {UUID(str(run_id)): output for run_id, output in await query(
        chaos.url, "SELECT run_id, output FROM warden.steps WHERE step_id = 'effect'")}
    saw_key = [r for r, out in outputs.items() if out and out["applied_now"] is False]
    figures = seen.figures(len(die_at), len(saw_key), worker_deaths=deaths,
                           failpoints_fired=len(fired))
    show(capsys, "side_effect_crash", figures)

    seen.assert_clean()
    assert len(fired) == RUNS, "each key's failpoint fires once"
    # the side effect happened once per key (the key is the table's primary key), by an
    # attempt before the one that completed
    assert sorted(effects) == sorted(f"{r}:effect" for r in die_at)
    # every run was completed by a retry that found the key already there
    assert sorted(saw_key) == sorted(die_at)
    for run_id, where in die_at.items():
        output = outputs[run_id]
        applier_attempt = int(effects[f"{run_id}:effect"].rpartition("@")[2])
        assert output["attempt"] > applier_attempt >= 1, (output, effects)
        if where == "after_checkpoint":  # the retry resumed from the checkpoint it was handed
            assert output["resumed_from"] == {
                "effect_applied_by": effects[f"{run_id}:effect"]}, output
    # each key ran at least twice (the failpoint's attempt, then the completing one), and
    # only the attempts a failpoint killed, or that overlapped a dying one, ran again
    assert all(n >= 2 for n in seen.started.values()) and len(seen.started) == RUNS
    assert figures.re_executions >= RUNS
