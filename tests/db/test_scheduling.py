"""The scheduler moving runs through their DAG, against a real database."""

from __future__ import annotations

import pytest

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support

pytestmark = pytest.mark.anyio

FAN_OUT = """
id: fan
name: fan-out
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
  b: {type: job, topic: t.b}
  c: {type: job, topic: t.c}
  join:
    type: job
    topic: t.join
    depends_on: [a, b, c]
    input: {total: "${steps.a.output.n}", b: "${steps.b.output}", who: "${input.who}"}
"""


async def test_seed_workflow_runs_to_the_end_with_every_transition_in_order(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, support.SEED_WORKFLOW)
    run = await support.start(db, "incident-remediation", {"incident_id": "INC-1"})
    for _ in range(3):  # detect, classify, patch_plan: one at a time, in order
        await support.settle(scheduler)
        [job] = await support.claim(db, support.SEED_TOPICS)
        await support.complete(db, job)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.WAITING
    [approval] = detail.approvals
    from engine.governance import approvals
    await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                           approve=True, principal="bob", reason="ok")
    await support.settle(scheduler)
    [job] = await support.claim(db, support.SEED_TOPICS)
    assert job.step_id == "apply_patch"
    await support.complete(db, job)
    await support.settle(scheduler)

    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert {s.status for s in detail.steps} == {StepStatus.SUCCEEDED}
    assert detail.run.output == {"notify": {"notification_id": detail.steps[-1].output[
        "notification_id"]}}
    per_step = ["step.ready", "policy.decision", "job.dispatched", "job.claimed",
                "job.succeeded"]
    assert await support.kinds(db, run.run_id) == [
        "run.created", *["policy.decision"] * 4,  # the submit gate, one per job step
        "run.started", *per_step, *per_step, *per_step,
        "step.ready", "approval.requested", "run.waiting",
        "approval.approved", "step.ready", "policy.decision", "job.dispatched", "run.resumed",
        "job.claimed", "job.succeeded", "step.ready", "notify.sent", "run.succeeded"]
    async with db.connection() as conn:
        from engine.store import timeline as timeline_q
        assert await timeline_q.verify(conn, run.run_id)


async def test_fan_out_dispatches_independent_steps_together_and_renders_join_input(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, FAN_OUT)
    run = await support.start(db, "fan", {"who": "ops"})
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.a", "t.b", "t.c", "t.join"])
    assert sorted(j.step_id for j in claimed) == ["a", "b", "c"]
    for job in claimed:
        await support.complete(db, job, {"n": 7, "step": job.step_id})
    await support.settle(scheduler)
    [join] = await support.claim(db, ["t.join"])
    assert join.input == {"total": 7, "b": {"n": 7, "step": "b"}, "who": "ops"}
    assert join.upstream == {s: {"n": 7, "step": s} for s in ("a", "b", "c")}
    assert join.job_id == f"{run.run_id}:join@1"


async def test_failed_step_skips_its_dependents_and_fails_the_run(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, FAN_OUT)
    run = await support.start(db, "fan", {"who": "ops"})
    await support.settle(scheduler)
    for job in await support.claim(db, ["t.a", "t.b", "t.c"]):
        if job.step_id == "a":
            await support.fail(db, job, retryable=False)
        else:
            await support.complete(db, job)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    statuses = {s.step_id: s.status for s in detail.steps}
    assert statuses == {"a": StepStatus.FAILED, "b": StepStatus.SUCCEEDED,
                        "c": StepStatus.SUCCEEDED, "join": StepStatus.SKIPPED}
    assert detail.run.status is RunStatus.FAILED
    assert detail.run.error["a"]["type"] == "Boom"
    assert "step.skipped" in await support.kinds(db, run.run_id)


async def test_rejected_approval_denies_the_run_and_skips_what_follows(
        db: Database, scheduler: Scheduler) -> None:
    from engine.governance import approvals

    await support.store(db, support.SEED_WORKFLOW)
    run = await support.start(db, "incident-remediation")
    for _ in range(3):
        await support.settle(scheduler)
        [job] = await support.claim(db, support.SEED_TOPICS)
        await support.complete(db, job)
    await support.settle(scheduler)
    [approval] = (await support.detail(db, run.run_id)).approvals
    await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                           approve=False, principal="bob", reason="too risky")
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.DENIED  # never "failed"
    statuses = {s.step_id: s.status for s in detail.steps}
    assert statuses["approval_gate"] is StepStatus.DENIED
    assert statuses["apply_patch"] is StepStatus.SKIPPED
    assert statuses["notify"] is StepStatus.SKIPPED
    assert (await support.kinds(db, run.run_id))[-1] == "run.denied"


async def test_missing_output_field_fails_the_step_without_a_job(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, FAN_OUT)
    run = await support.start(db, "fan", {"who": "ops"})
    await support.settle(scheduler)
    for job in await support.claim(db, ["t.a", "t.b", "t.c"]):
        await support.complete(db, job, {"no_n_here": True})
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    join = next(s for s in detail.steps if s.step_id == "join")
    assert join.status is StepStatus.FAILED
    assert join.error["type"] == "InputRenderError"
    assert not [j for j in detail.jobs if j.step_id == "join"]
    assert detail.run.status is RunStatus.FAILED


async def test_notify_step_writes_the_outbox_and_notifies(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    import psycopg

    await support.store(db, """
id: note
name: n
version: 1.0.0
steps:
  hello: {type: notify, message: "hi there", webhook: "https://example.invalid/hook"}
""")
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN warden_notifications")
    run = await support.start(db, "note")
    await support.settle(scheduler)
    gen = listener.notifies(timeout=5, stop_after=1)
    notes = [n async for n in gen]
    await listener.close()
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    async with db.connection() as conn:
        rows = await (await conn.execute(
            "SELECT notification_id::text, message, webhook, delivered_at FROM "
            "warden.notifications WHERE run_id = %s", [run.run_id])).fetchall()
    assert len(rows) == 1 and rows[0][1:3] == ("hi there", "https://example.invalid/hook")
    assert rows[0][3] is None  # a webhook is still to be delivered
    assert [n.payload for n in notes] == [rows[0][0]]  # the id only, never the message


async def test_two_schedulers_never_dispatch_the_same_attempt_twice(
        db: Database) -> None:
    import asyncio

    await support.store(db, FAN_OUT)
    run_ids = [(await support.start(db, "fan", {"who": str(i)})).run_id for i in range(30)]
    first = Scheduler(support.services(db), batch_size=5)
    second = Scheduler(support.services(db), batch_size=5)
    for _ in range(10):
        await asyncio.gather(first.run_once(), second.run_once())
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT (run_id, step_id)) FROM warden.jobs")
        total, distinct = await cur.fetchone()  # type: ignore[misc]
        cur = await conn.execute(
            "SELECT count(*) FROM warden.timeline WHERE kind = 'run.started'")
        (started,) = await cur.fetchone()  # type: ignore[misc]
    assert total == distinct == 3 * len(run_ids)
    assert started == len(run_ids)
    assert all(j.status is JobStatus.PENDING for j in (await support.detail(db, run_ids[0])).jobs)


async def test_each_state_change_logs_one_info_line_with_its_ids(
        db: Database, scheduler: Scheduler, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    await support.store(db, FAN_OUT)
    with caplog.at_level(logging.INFO, logger="engine.events"):
        run = await support.start(db, "fan", {"who": "ops"})
        await support.settle(scheduler)
    logged = [(r.event, r.run_id, r.step_id) for r in caplog.records  # type: ignore[attr-defined]
              if r.name == "engine.events"]
    kinds = await support.kinds(db, run.run_id)
    assert [k for k, _, _ in logged] == kinds  # one line per event, in the same order
    assert {r for _, r, _ in logged} == {str(run.run_id)}
    assert ("job.dispatched", str(run.run_id), "a") in logged
