"""for_each items run by real `warden serve` and `warden worker` processes
(docs/workflows.md#for_each): max_parallel holds, counted from the timeline, and a
worker SIGKILLed on one item re-runs that item alone, from its checkpoint."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.store import Database
from tests import support
from tests.e2e.processes import Processes

pytestmark = pytest.mark.anyio

FLOW = """
id: fleet
name: fleet
version: 1.0.0
steps:
  work:
    type: job
    topic: t.items
    for_each: "${input.hosts}"
    max_parallel: MAXP
    retries: {max_attempts: 2, backoff_ms: 0, jitter: 0}
    input: {host: "${item}", behave: "${input.behave}", marks: "${input.marks}"}
"""


async def _until(db: Database, run_id: Any, wanted: RunStatus) -> None:
    async def check() -> bool:
        status = (await support.detail(db, run_id)).run.status
        if status.is_final and status is not wanted:
            raise AssertionError(f"run ended {status}, expected {wanted}")
        return status is wanted

    await support.wait_for(check, timeout=60, what=f"run {run_id} to be {wanted}")


async def test_max_parallel_is_never_exceeded_counting_leases_on_the_timeline(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, FLOW.replace("MAXP", "3"))
    procs.serve()
    procs.worker("t.items", concurrency=8)
    hosts = [f"h{i}" for i in range(8)]
    run = await support.start(db, "fleet", {"hosts": hosts, "marks": str(marks),
                                            "behave": {"work": {"sleep_s": 0.4}}})
    await _until(db, run.run_id, RunStatus.SUCCEEDED)
    held, most = 0, 0
    for event in await support.events(db, run.run_id):  # in commit order
        if event.kind == "job.claimed":
            held += 1
        elif event.kind in ("job.succeeded", "job.failed", "job.timed_out", "job.cancelled"):
            held -= 1
        most = max(most, held)
    assert most == 3  # items did overlap, and never more than max_parallel of them
    detail = await support.detail(db, run.run_id)
    assert detail.run.output == {"work": [
        {"step": "work", "attempt": 1, "resumed_from": None,
         "side_effect_key": f"{run.run_id}:work[{i}]"} for i in range(8)]}


async def test_a_worker_killed_on_item_3_of_10_reruns_item_3_alone_from_its_checkpoint(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, FLOW.replace("MAXP", "10"))
    procs.serve()
    victim = procs.worker("t.items", concurrency=10, WARDEN_LEASE_MS="1500")
    run = await support.start(db, "fleet", {
        "hosts": [f"h{i}" for i in range(10)], "marks": str(marks),
        "behave": {"work[3]": {"hang_after_checkpoint": True}}})

    async def only_item_3_left() -> bool:
        if not (marks / "hanging-work[3]").exists():
            return False
        detail = await support.detail(db, run.run_id)
        done = [i.item_index for i in detail.items if i.status is StepStatus.SUCCEEDED]
        return done == [0, 1, 2, 4, 5, 6, 7, 8, 9]

    await support.wait_for(only_item_3_left, timeout=60, what="item 3 alone to hang")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    procs.worker("t.items", WARDEN_LEASE_MS="1500")
    await _until(db, run.run_id, RunStatus.SUCCEEDED)

    detail = await support.detail(db, run.run_id)
    attempts = Counter(j.item_index for j in detail.jobs)
    assert attempts == {**{i: 1 for i in range(10)}, 3: 2}
    item3 = sorted((j for j in detail.jobs if j.item_index == 3), key=lambda j: j.attempt)
    assert [(j.job_id, j.status) for j in item3] == [
        (f"{run.run_id}:work[3]@1", JobStatus.TIMED_OUT),
        (f"{run.run_id}:work[3]@2", JobStatus.SUCCEEDED)]
    output = detail.steps[0].output[3]
    assert output["resumed_from"] == {"progress": "half", "pid": victim.pid}
    assert output["side_effect_key"] == f"{run.run_id}:work[3]"
    executed = Counter(line.split()[0].rsplit("@", 1)[0]
                       for line in (marks / "executions").read_text().splitlines())
    assert executed == {**{f"{run.run_id}:work[{i}]": 1 for i in range(10)},
                        f"{run.run_id}:work[3]": 2}


CHILD = """
id: patch-host
name: patch one host
version: 1.0.0
output: {done: "${steps.apply.output.step}", key: "${steps.apply.output.side_effect_key}"}
steps:
  apply: {type: job, topic: t.child, input: {host: "${input.host}", behave: "${input.behave}",
                                             marks: "${input.marks}"}}
"""
FLEET = """
id: fleet-children
name: fleet of children
version: 1.0.0
steps:
  each:
    type: workflow
    workflow: patch-host
    for_each: "${input.hosts}"
    max_parallel: 2
    input: {host: "${item}", behave: "${input.behave}", marks: "${input.marks}"}
"""


async def test_two_serves_start_each_child_once_and_every_parent_finishes(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, CHILD)
    await support.store(db, FLEET)
    for _ in range(2):
        procs.serve()
    procs.worker("t.child", concurrency=8)
    runs = [await support.start(db, "fleet-children", {
        "hosts": ["a", "b", "c"], "marks": str(marks), "behave": {}}) for _ in range(15)]

    async def all_done() -> bool:
        async with db.connection() as conn:
            row = await (await conn.execute(
                "SELECT count(*) FROM warden.runs WHERE finished_at IS NULL")).fetchone()
        return row is not None and row[0] == 0

    await support.wait_for(all_done, timeout=120, interval=0.3, what="every run to finish")
    async with db.connection() as conn:
        rows = await (await conn.execute(
            "SELECT parent_run_id, parent_item_index, count(*), min(status::text) "
            "FROM warden.runs WHERE parent_run_id IS NOT NULL GROUP BY 1, 2")).fetchall()
    assert len(rows) == 15 * 3 and {(r[2], r[3]) for r in rows} == {(1, "succeeded")}
    for run in runs:
        detail = await support.detail(db, run.run_id)
        assert detail.run.status is RunStatus.SUCCEEDED
        kids = {c.parent_item_index: c.run_id for c in detail.children}
        assert detail.run.output == {"each": [
            {"done": "apply", "key": f"{kids[i]}:apply"} for i in range(3)]}


async def test_cancelling_a_parent_stops_its_childs_running_job_in_the_worker(
        db: Database, procs: Processes, marks: Path) -> None:
    from engine.runs import stopping
    await support.store(db, CHILD)
    await support.store(db, FLEET)
    procs.serve()
    procs.worker("t.child", concurrency=4, WARDEN_LEASE_MS="1500")
    run = await support.start(db, "fleet-children", {
        "hosts": ["a"], "marks": str(marks), "behave": {"apply": {"sleep_s": 30}}})

    async def child_job_running() -> Any:
        async with db.connection() as conn:
            row = await (await conn.execute(
                "SELECT j.job_id FROM warden.jobs j JOIN warden.runs r ON r.run_id = j.run_id"
                " WHERE r.parent_run_id = %s AND j.status = 'running'",
                [run.run_id])).fetchone()
        return row

    [job_id] = await support.wait_for(child_job_running, timeout=30, what="the child's job")
    await stopping.cancel(db, tenant_id="default", run_id=run.run_id, by="op")
    detail = await support.detail(db, run.run_id)
    [child] = detail.children
    assert (detail.run.status, child.status) == (RunStatus.CANCELLED, RunStatus.CANCELLED)
    child_detail = await support.detail(db, child.run_id)
    [job] = child_detail.jobs
    assert (job.job_id, job.status) == (job_id, JobStatus.CANCELLED)
    kinds = await support.kinds(db, child.run_id)
    assert kinds[-2:] == ["job.cancelled", "run.cancelled"]
