"""Batch starts (engine.runs.lifecycle.start_many) and runs that dispatch their first
steps in their start's transaction (Services.start_dispatch)."""

from __future__ import annotations

import pytest

from engine.core.errors import IdempotencyConflict, InvalidInput, NotFound, PolicyDenied
from engine.governance import decisions
from engine.governance.policy import Verdict
from engine.runs import lifecycle
from engine.runs.lifecycle import MAX_BATCH, StartItem
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler, with_start_dispatch
from engine.store import Database
from tests import support

pytestmark = pytest.mark.anyio

TWO = """
id: two
name: two steps
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
  b: {type: job, topic: t.b, depends_on: [a]}
"""

ONE = """
id: one
name: one step
version: 1.0.0
steps:
  only: {type: job, topic: t.only}
"""


async def count(db: Database, sql: str) -> int:
    async with db.connection() as conn:
        row = await (await conn.execute(sql)).fetchone()
        assert row is not None
        return int(row[0])


async def test_each_item_has_its_own_key_and_result(db: Database, svc: Services) -> None:
    await support.store(db, TWO)
    items = [StartItem({"n": i}, f"k{i}") for i in range(5)] + [StartItem({"n": 9})]
    first = await lifecycle.start_many(svc, tenant_id="default", workflow_id="two",
                                       created_by="alice", items=items)
    assert [r.index for r in first] == list(range(6))
    assert all(r.error is None and r.started and not r.started.replayed for r in first)
    assert len({r.started.run.run_id for r in first if r.started}) == 6
    # the same keys again: each item replays its own run; a changed body conflicts alone
    again = await lifecycle.start_many(svc, tenant_id="default", workflow_id="two",
                                       created_by="alice", items=[
                                           StartItem({"n": 0}, "k0"), StartItem({"n": 7}, "k1"),
                                           StartItem({"n": 2}, "k2"), StartItem({"n": 5}, "k5")])
    assert again[0].started and again[0].started.replayed
    assert again[0].started.run.run_id == first[0].started.run.run_id  # type: ignore[union-attr]
    assert isinstance(again[1].error, IdempotencyConflict) and again[1].started is None
    assert again[2].started and again[2].started.replayed
    assert again[3].started and not again[3].started.replayed
    assert await count(db, "SELECT count(*) FROM warden.runs") == 7
    # each new run has its steps, its run.created and its submit decisions, chain intact
    assert await count(db, "SELECT count(*) FROM warden.steps") == 14
    assert await count(db, "SELECT count(*) FROM warden.policy_decisions "
                           "WHERE stage = 'submit'") == 14
    assert await count(db, "SELECT count(*) FROM warden.timeline "
                           "WHERE kind = 'run.created'") == 7
    async with db.connection() as conn:
        problems = await (await conn.execute(
            "SELECT * FROM warden.timeline_problems(NULL, NULL)")).fetchall()
    assert problems == []


async def test_a_key_twice_in_one_batch_starts_one_run(db: Database, svc: Services) -> None:
    await support.store(db, ONE)
    out = await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                     created_by="alice", items=[
                                         StartItem({"x": 1}, "same"), StartItem({"x": 1}, "same"),
                                         StartItem({"x": 2}, "same")])
    assert out[0].started and not out[0].started.replayed
    assert out[1].started and out[1].started.replayed
    assert out[1].started.run.run_id == out[0].started.run.run_id
    assert isinstance(out[2].error, IdempotencyConflict)
    assert await count(db, "SELECT count(*) FROM warden.runs") == 1


async def test_a_bad_item_spoils_no_other(db: Database, svc: Services) -> None:
    await support.store(db, ONE)
    out = await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                     created_by="alice", items=[
                                         StartItem({"ok": 1}),
                                         StartItem([1, 2]),  # not an object
                                         StartItem({"ok": 2}, "x" * 300),  # key too long
                                         StartItem({"ok": 3}, version="9.9.9"),  # no such version
                                         StartItem({"bad": float("nan")}),
                                         StartItem({"ok": 4})])
    assert out[0].started and out[5].started
    assert isinstance(out[1].error, InvalidInput) and out[1].error.field == "items[1].input"
    assert isinstance(out[2].error, InvalidInput)
    assert out[2].error.field == "items[2].Idempotency-Key"
    assert isinstance(out[3].error, NotFound)
    assert isinstance(out[4].error, InvalidInput)
    assert out[4].error.field.startswith("items[4].input")
    assert all(out[i].started is None for i in (1, 2, 3, 4))
    assert await count(db, "SELECT count(*) FROM warden.runs") == 2


async def test_the_limit_is_a_thousand_and_nothing_is_stored_past_it(
        db: Database, svc: Services) -> None:
    await support.store(db, ONE)
    with pytest.raises(InvalidInput, match="1 to 1000"):
        await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                   created_by="alice",
                                   items=[StartItem({}) for _ in range(MAX_BATCH + 1)])
    with pytest.raises(InvalidInput):
        await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                   created_by="alice", items=[])
    assert await count(db, "SELECT count(*) FROM warden.runs") == 0
    out = await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                     created_by="alice",
                                     items=[StartItem({"i": i}, f"k{i}") for i in range(MAX_BATCH)])
    assert all(r.started for r in out)
    assert await count(db, "SELECT count(*) FROM warden.runs") == MAX_BATCH
    assert await count(db, "SELECT count(*) FROM warden.timeline") == 2 * MAX_BATCH


async def test_keys_are_tenant_scoped(db: Database, svc: Services) -> None:
    for tenant in ("t1", "t2"):
        await support.store(db, ONE, tenant=tenant)
    [one] = await lifecycle.start_many(svc, tenant_id="t1", workflow_id="one",
                                       created_by="alice", items=[StartItem({"s": 1}, "k")])
    # t2's batch with t1's key and another body: its own run, never t1's (nor a conflict)
    [two] = await lifecycle.start_many(svc, tenant_id="t2", workflow_id="one",
                                       created_by="bob", items=[StartItem({"s": 2}, "k")])
    assert one.started and two.started and not two.started.replayed
    assert two.started.run.tenant_id == "t2"
    assert two.started.run.run_id != one.started.run.run_id
    # and a tenant without the workflow gets not found, never another tenant's workflow
    with pytest.raises(NotFound):
        await lifecycle.start_many(svc, tenant_id="t3", workflow_id="one",
                                   created_by="carol", items=[StartItem({}, "k")])
    assert await count(db, "SELECT count(*) FROM warden.runs WHERE tenant_id = 't3'") == 0


DENY_BIG = """
default_decision: allow
rules:
  - name: no-big
    match: {input: ['input.size > 10']}
    decision: deny
    reason: too big
"""


async def test_submit_decisions_are_per_item(db: Database, svc: Services) -> None:
    await support.store(db, ONE)
    await activate(db, DENY_BIG)
    out = await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                     created_by="alice", items=[
                                         StartItem({"size": 1}), StartItem({"size": 99}),
                                         StartItem({"size": 2})])
    assert out[0].error is None and out[2].error is None
    assert isinstance(out[1].error, PolicyDenied)
    assert out[1].started is not None and out[1].started.run.status.value == "denied"
    assert await count(db, "SELECT count(*) FROM warden.runs WHERE status = 'denied'") == 1
    assert await count(db, "SELECT count(*) FROM warden.runs WHERE needs_scheduling") == 2


async def test_a_start_dispatches_its_first_steps_in_its_own_transaction(
        db: Database) -> None:
    svc = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    await support.store(db, TWO)
    out = await lifecycle.start_many(svc, tenant_id="default", workflow_id="two",
                                     created_by="alice",
                                     items=[StartItem({"i": i}) for i in range(3)])
    assert all(r.started and r.started.run.status.value == "running" for r in out)
    # no scheduler pass ran: the first jobs are claimable, the runs are not flagged
    assert await count(db, "SELECT count(*) FROM warden.runs WHERE needs_scheduling") == 0
    claimed = await support.claim(db, ["t.a"])
    assert len(claimed) == 3
    run_id = out[0].started.run.run_id  # type: ignore[union-attr]
    kinds = await support.kinds(db, run_id)
    # the start's events (run.created, a submit decision per job step), then the pass's
    assert kinds[:3] == ["run.created", "policy.decision", "policy.decision"]
    assert kinds[3:] == ["run.started", "step.ready", "policy.decision", "job.dispatched",
                         "job.claimed"]
    # a dispatch decision for every dispatched job
    assert await count(db, "SELECT count(*) FROM warden.policy_decisions "
                           "WHERE stage = 'dispatch'") == 3
    # the run goes on through the scheduler as before
    for job in claimed:
        await support.complete(db, job)
    await support.settle(Scheduler(svc))
    assert len(await support.claim(db, ["t.b"])) == 3
    async with db.connection() as conn:
        assert await (await conn.execute(
            "SELECT * FROM warden.timeline_problems(NULL, NULL)")).fetchall() == []


async def test_a_single_start_dispatches_too_and_replays_unchanged(db: Database) -> None:
    svc = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    await support.store(db, ONE)
    first = await lifecycle.start(svc, tenant_id="default", workflow_id="one", input={},
                                  created_by="alice", idempotency_key="k")
    again = await lifecycle.start(svc, tenant_id="default", workflow_id="one", input={},
                                  created_by="alice", idempotency_key="k")
    assert first.run.status.value == "running" and again.replayed
    assert await count(db, "SELECT count(*) FROM warden.jobs") == 1


REQUIRE_APPROVAL = """
default_decision: allow
rules:
  - name: ask
    match: {topics: [t.a]}
    decision: require_approval
    reason: ask first
"""


async def test_a_start_dispatch_applies_every_verdict(db: Database) -> None:
    svc = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    await support.store(db, TWO)
    await activate(db, REQUIRE_APPROVAL)
    [out] = await lifecycle.start_many(svc, tenant_id="default", workflow_id="two",
                                       created_by="alice", items=[StartItem({})])
    assert out.started is not None
    detail = await support.detail(svc, out.started.run.run_id)
    assert [j.status.value for j in detail.jobs] == ["blocked"]
    assert [a.kind for a in detail.approvals] == ["policy"]
    assert detail.run.status.value == "waiting"


async def activate(db: Database, source: str) -> None:
    stored = await decisions.store_bundle(db, tenant_id="default", source=source,
                                          media_type=None, created_by="admin")
    await decisions.activate(db, tenant_id="default", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")


async def test_a_big_batch_leaves_its_dispatch_to_the_scheduler(db: Database) -> None:
    svc = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    await support.store(db, ONE)
    n = lifecycle.DISPATCH_AT_START_MAX + 1
    out = await lifecycle.start_many(svc, tenant_id="default", workflow_id="one",
                                     created_by="alice",
                                     items=[StartItem({"i": i}) for i in range(n)])
    assert all(r.started and r.started.run.status.value == "pending" for r in out)
    assert await count(db, "SELECT count(*) FROM warden.jobs") == 0
    assert await count(db, "SELECT count(*) FROM warden.runs WHERE needs_scheduling") == n
    await support.settle(Scheduler(svc))
    assert len(await support.claim(db, ["t.only"], n=n)) == n
