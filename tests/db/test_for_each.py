"""for_each steps against a real database: items, max_parallel, retries per item, the
step's outcome from its items, denial per item, and the job protocol unchanged
(docs/workflows.md#for_each)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.core.errors import LeaseLost
from engine.definitions.model import MAX_FOR_EACH_ITEMS
from engine.governance import decisions
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import items as items_q
from tests import support

pytestmark = pytest.mark.anyio

FLOW = """
id: fan
name: fan over hosts
version: 1.0.0
steps:
  find: {type: job, topic: t.find}
  patch:
    type: job
    topic: t.patch
    depends_on: [find]
    for_each: "${steps.find.output.hosts}"
    max_parallel: 2
    retries: {max_attempts: 2, backoff_ms: 0, jitter: 0}
    input: {host: "${item.name}", n: "${item_index}", who: "${input.who}"}
  report:
    type: job
    topic: t.report
    depends_on: [patch]
    input: {patched: "${steps.patch.output}"}
"""


def hosts(n: int) -> dict[str, Any]:
    return {"hosts": [{"name": f"h{i}"} for i in range(n)]}


async def _found(db: Database, scheduler: Scheduler, n: int, who: str = "ops") -> Any:
    await support.store(db, FLOW)
    run = await support.start(db, "fan", {"who": who})
    await support.settle(scheduler)
    [find] = await support.claim(db, ["t.find"])
    await support.complete(db, find, hosts(n))
    await support.settle(scheduler)
    return run


async def _items(db: Database, run_id: Any) -> list[Any]:
    async with db.connection() as conn:
        return await items_q.of_run(conn, "default", run_id)


async def test_items_run_max_parallel_at_a_time_and_the_output_is_theirs_in_order(
        db: Database, scheduler: Scheduler) -> None:
    run = await _found(db, scheduler, 5)
    seen: list[str] = []
    for _ in range(10):
        claimed = await support.claim(db, ["t.patch"], n=10)
        if not claimed:
            break
        assert len(claimed) <= 2  # max_parallel: never more in flight
        for job in claimed:
            seen.append(job.job_id)
            i = int(job.job_id.split("[")[1].split("]")[0])
            assert job.input == {"host": f"h{i}", "n": i, "who": "ops"}
            await support.complete(db, job, {"host": job.input["host"], "ok": True})
        await support.settle(scheduler)
    assert seen == [f"{run.run_id}:patch[{i}]@1" for i in range(5)]
    [report] = await support.claim(db, ["t.report"])
    assert report.input == {"patched": [{"host": f"h{i}", "ok": True} for i in range(5)]}
    await support.complete(db, report)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    kinds = await support.kinds(db, run.run_id)
    assert kinds.count("foreach.expanded") == 1 and kinds.count("foreach.ended") == 1
    # three at submit, then one per attempt: find, five items, report
    assert kinds.count("policy.decision") == 3 + 1 + 5 + 1


async def test_a_failed_item_is_retried_alone_with_its_checkpoint(
        db: Database, scheduler: Scheduler) -> None:
    run = await _found(db, scheduler, 3)
    first = await support.claim(db, ["t.patch"])
    assert [j.job_id for j in first] == [f"{run.run_id}:patch[0]@1", f"{run.run_id}:patch[1]@1"]
    async with db.connection() as conn:
        from datetime import timedelta

        from engine.store import jobs as jobs_q
        await jobs_q.heartbeat(conn, job_id=first[1].job_id, lease_token=first[1].lease_token,
                               extend=timedelta(seconds=30), checkpoint={"step": 7})
    await support.complete(db, first[0], {"i": 0})
    await support.fail(db, first[1])
    await support.settle(scheduler)
    again = await support.claim(db, ["t.patch"])
    assert sorted(j.job_id for j in again) == [f"{run.run_id}:patch[1]@2",
                                               f"{run.run_id}:patch[2]@1"]
    retried = next(j for j in again if j.job_id.endswith("[1]@2"))
    assert retried.checkpoint == {"step": 7}
    for job in again:
        await support.complete(db, job, {"i": job.job_id})
    await support.settle(scheduler)
    items = await _items(db, run.run_id)
    assert [(i.status, i.attempts) for i in items] == [
        (StepStatus.SUCCEEDED, 1), (StepStatus.SUCCEEDED, 2), (StepStatus.SUCCEEDED, 1)]


async def test_an_item_failing_after_its_retries_fails_the_step_and_cancels_the_rest(
        db: Database, scheduler: Scheduler) -> None:
    run = await _found(db, scheduler, 4)
    a, b = await support.claim(db, ["t.patch"])
    await support.fail(db, a, retryable=False)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.FAILED
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert patch.status is StepStatus.FAILED
    assert patch.error["type"] == "ItemFailed" and patch.error["item_index"] == 0
    items = await _items(db, run.run_id)
    assert [i.status for i in items] == [StepStatus.FAILED, StepStatus.CANCELLED,
                                         StepStatus.CANCELLED, StepStatus.CANCELLED]
    job_b = next(j for j in detail.jobs if j.job_id == b.job_id)
    assert job_b.status is JobStatus.CANCELLED
    assert not [j for j in detail.jobs if j.item_index in (2, 3)]  # never started
    with pytest.raises(LeaseLost):
        await support.complete(db, b)  # its late completion is fenced


async def test_each_item_is_decided_on_its_own_input_and_a_denied_one_denies_the_step(
        db: Database) -> None:
    svc = Services.create(db, policy_default=Verdict.ALLOW)
    stored = await decisions.store_bundle(db, tenant_id="default", media_type=None,
                                          created_by="admin", source="""
default_decision: allow
rules:
  - name: no-h2
    match: {topics: ["t.patch"], input: ['input.host == "h2"']}
    decision: deny
    reason: h2 is frozen
""")
    await decisions.activate(db, tenant_id="default", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")
    sched = Scheduler(svc)
    run = await _found(db, sched, 4)
    first = await support.claim(db, ["t.patch"])  # h0 and h1 are allowed
    for job in first:
        await support.complete(db, job)
    await support.settle(sched)  # h2 is denied at its dispatch, h3 never starts
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.DENIED
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert patch.status is StepStatus.DENIED
    assert patch.error["type"] == "ItemDenied" and patch.error["item_index"] == 2
    assert patch.error["error"]["rule"] == "no-h2"
    items = await _items(db, run.run_id)
    assert [i.status for i in items] == [StepStatus.SUCCEEDED, StepStatus.SUCCEEDED,
                                         StepStatus.DENIED, StepStatus.CANCELLED]
    denied = next(j for j in detail.jobs if j.item_index == 2)
    assert denied.status is JobStatus.DENIED and denied.input["host"] == "h2"
    dispatch = [e for e in await support.events(db, run.run_id)
                if e.kind == "policy.decision" and e.data.get("stage") == "dispatch"
                and e.step_id == "patch"]
    assert [e.job_id for e in dispatch] == [f"{run.run_id}:patch[{i}]@1" for i in range(3)]


async def test_a_value_that_is_not_a_list_fails_the_step_with_a_clear_error(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, FLOW)
    run = await support.start(db, "fan", {"who": "x"})
    await support.settle(scheduler)
    [find] = await support.claim(db, ["t.find"])
    await support.complete(db, find, {"hosts": "h1,h2"})
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert patch.status is StepStatus.FAILED
    assert patch.error["type"] == "ForEachNotAList"
    assert "a string, not a list" in patch.error["message"]


async def test_too_many_items_fail_the_step_naming_the_limit(db: Database,
                                                             scheduler: Scheduler) -> None:
    await support.store(db, FLOW)
    run = await support.start(db, "fan", {"who": "x"})
    await support.settle(scheduler)
    [find] = await support.claim(db, ["t.find"])
    await support.complete(db, find, {"hosts": list(range(MAX_FOR_EACH_ITEMS + 1))})
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert patch.error["type"] == "ForEachTooManyItems"
    assert f"the limit is {MAX_FOR_EACH_ITEMS}" in patch.error["message"]


async def test_an_empty_list_succeeds_with_an_empty_output(db: Database,
                                                            scheduler: Scheduler) -> None:
    run = await _found(db, scheduler, 0)
    [report] = await support.claim(db, ["t.report"])
    assert report.input == {"patched": []}
    assert run is not None


async def test_cancel_reaches_every_item(db: Database, scheduler: Scheduler) -> None:
    from engine.runs import stopping
    run = await _found(db, scheduler, 5)
    running = await support.claim(db, ["t.patch"])
    await stopping.cancel(db, tenant_id="default", run_id=run.run_id, by="op")
    items = await _items(db, run.run_id)
    assert [i.status for i in items] == [StepStatus.CANCELLED] * 5
    detail = await support.detail(db, run.run_id)
    assert {j.status for j in detail.jobs if j.item_index is not None} == {JobStatus.CANCELLED}
    assert len(running) == 2


async def test_a_rerun_from_the_for_each_step_runs_its_items_again(
        db: Database, scheduler: Scheduler) -> None:
    from engine.runs import reruns
    run = await _found(db, scheduler, 2)
    for job in await support.claim(db, ["t.patch"]):
        await support.fail(db, job, retryable=False)
    await support.settle(scheduler)
    svc = support.services(db)
    plan = await reruns.plan(svc, tenant_id="default", run_id=run.run_id, from_step="patch")
    assert plan.to_run == ["patch", "report"] and [*plan.reused] == ["find"]
    assert "runs every item again" in plan.flow["patch"]
    assert plan.to_doc()["flow"] == plan.flow
    _, started = await reruns.rerun(svc, tenant_id="default", run_id=run.run_id,
                                    from_step="patch", created_by="bob")
    await support.settle(scheduler)
    again = await support.claim(db, ["t.patch"])
    assert sorted(j.job_id for j in again) == [f"{started.run.run_id}:patch[{i}]@1"
                                               for i in range(2)]
    assert {j.input["host"] for j in again} == {"h0", "h1"}  # the reused list


async def test_the_run_document_counts_items_by_status_with_each_items_attempts(
        db: Database, scheduler: Scheduler) -> None:
    from engine.runs import views
    run = await _found(db, scheduler, 3)
    first, _ = await support.claim(db, ["t.patch"])
    await support.fail(db, first)  # retried: attempt 2 is dispatched
    await support.settle(scheduler)
    doc = views.run_detail(await support.detail(db, run.run_id))
    patch = next(s for s in doc["steps"] if s["step_id"] == "patch")
    assert patch["items"]["total"] == 3
    assert patch["items"]["by_status"] == {"running": 2, "pending": 1}
    assert [(i["item_index"], i["attempts"], i["job_id"]) for i in patch["items"]["list"]] == [
        (0, 2, f"{run.run_id}:patch[0]@2"), (1, 1, f"{run.run_id}:patch[1]@1"),
        (2, 0, None)]
    assert doc["children"] == [] and doc["parent_run_id"] is None
    from engine.cli.runs import _flow_lines  # what `warden runs show` prints under the step
    assert list(_flow_lines(patch)) == [
        "items: 3 (1 pending, 2 running)",
        f"[0] running    attempts=2  {run.run_id}:patch[0]@2  Boom: test failure",
        f"[1] running    attempts=1  {run.run_id}:patch[1]@1",
        "[2] pending    attempts=0  not started"]


ASK_H1 = """
default_decision: allow
rules:
  - name: ask-h1
    match: {topics: ["t.patch"], input: ['input.host == "h1"']}
    decision: require_approval
    reason: h1 is production
"""


async def _with_policy(db: Database, source: str) -> Scheduler:
    stored = await decisions.store_bundle(db, tenant_id="default", media_type=None,
                                          created_by="admin", source=source)
    await decisions.activate(db, tenant_id="default", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")
    return Scheduler(Services.create(db, policy_default=Verdict.ALLOW))


@pytest.mark.parametrize("approve", [True, False])
async def test_an_item_policy_asks_an_approval_for_waits_for_it_alone(
        db: Database, approve: bool) -> None:
    from engine.governance import approvals
    sched = await _with_policy(db, ASK_H1)
    run = await _found(db, sched, 3)
    [h0] = await support.claim(db, ["t.patch"])  # h1 is held; h2 waits for a free slot
    detail = await support.detail(db, run.run_id)
    [approval] = detail.approvals
    assert approval.job_id == f"{run.run_id}:patch[1]@1" and approval.kind == "policy"
    from engine.runs import approval_plan
    shown = await approval_plan.plan(support.services(db), "default", approval.approval_id)
    assert shown["job_hash_matches"] is True and shown["covers"]["input"]["host"] == "h1"
    items = await _items(db, run.run_id)
    assert [i.status for i in items] == [StepStatus.RUNNING, StepStatus.WAITING,
                                         StepStatus.PENDING]
    await support.complete(db, h0)
    await support.settle(sched)
    [h2] = await support.claim(db, ["t.patch"])
    assert h2.input["host"] == "h2"
    await support.complete(db, h2)
    await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                           approve=approve, principal="bob", reason="checked")
    await support.settle(sched)
    if approve:
        [h1] = await support.claim(db, ["t.patch"])
        assert h1.job_id == approval.job_id
        await support.complete(db, h1)
        await support.settle(sched)
        [report] = await support.claim(db, ["t.report"])
        assert [p["ok"] for p in report.input["patched"]] == ["patch"] * 3
    else:
        detail = await support.detail(db, run.run_id)
        assert detail.run.status is RunStatus.DENIED
        patch = next(s for s in detail.steps if s.step_id == "patch")
        assert patch.error["item_index"] == 1
        assert patch.error["error"]["type"] == "ApprovalRejected"


async def test_an_items_approval_expiring_times_the_item_and_the_step_out(
        db: Database) -> None:
    from engine.daemons.reaper import Reaper
    sched = await _with_policy(db, ASK_H1)
    run = await _found(db, sched, 2)
    [h0] = await support.claim(db, ["t.patch"])
    await support.complete(db, h0)
    await support.advance_clock(db, 400 * 24 * 3600)
    assert (await Reaper(db).run_once()).approvals == 1
    await support.settle(sched)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.TIMED_OUT
    items = await _items(db, run.run_id)
    assert [i.status for i in items] == [StepStatus.SUCCEEDED, StepStatus.TIMED_OUT]
    held = next(j for j in detail.jobs if j.item_index == 1)
    assert held.status is JobStatus.TIMED_OUT


async def test_a_policy_change_re_judges_a_held_item(db: Database) -> None:
    sched = await _with_policy(db, ASK_H1)
    run = await _found(db, sched, 2)
    await _with_policy(db, "default_decision: allow\nrules: []\n")
    await support.settle(sched)
    detail = await support.detail(db, run.run_id)
    [approval] = detail.approvals
    assert approval.status.value == "superseded"
    claimed = await support.claim(db, ["t.patch"])
    assert sorted(j.input["host"] for j in claimed) == ["h0", "h1"]
