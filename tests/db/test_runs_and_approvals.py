"""Starting runs (idempotency, pinning) and deciding approvals (once, never by the starter)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from engine.core.enums import ApprovalStatus, RunStatus, StepStatus
from engine.core.errors import Conflict, Forbidden, IdempotencyConflict, InvalidDefinition, NotFound
from engine.daemons.reaper import Reaper
from engine.definitions import workflows
from engine.governance import approvals
from engine.runs import lifecycle
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store.records import ApprovalRow, RunRow
from tests import support

pytestmark = pytest.mark.anyio

GATE = """
id: gate
name: gate
version: 1.0.0
steps:
  ask: {type: approval, expires_in_ms: 600000}
  act: {type: job, topic: t.act, depends_on: [ask]}
"""


async def test_same_key_same_body_replays_and_different_body_conflicts(
        db: Database, svc: Services) -> None:
    await support.store(db, GATE)
    first = await lifecycle.start(svc, tenant_id="default", workflow_id="gate",
                             input={"n": 1}, created_by="alice", idempotency_key="k")
    again = await lifecycle.start(svc, tenant_id="default", workflow_id="gate",
                             input={"n": 1}, created_by="alice", idempotency_key="k")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.run.run_id == first.run.run_id
    with pytest.raises(IdempotencyConflict):
        await lifecycle.start(svc, tenant_id="default", workflow_id="gate", input={"n": 2},
                         created_by="alice", idempotency_key="k")
    # keys are tenant-scoped: another tenant's identical key starts its own run
    await support.store(db, GATE, tenant="other")
    other = await lifecycle.start(svc, tenant_id="other", workflow_id="gate", input={"n": 2},
                             created_by="alice", idempotency_key="k")
    assert not other.replayed and other.run.run_id != first.run.run_id


async def test_sixteen_concurrent_starts_with_one_key_make_one_run(
        db: Database, svc: Services) -> None:
    await support.store(db, GATE)
    results = await asyncio.gather(*(
        lifecycle.start(svc, tenant_id="default", workflow_id="gate", input={"n": 1},
                   created_by="alice", idempotency_key="storm") for _ in range(16)))
    assert len({r.run.run_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.runs")
        assert await cur.fetchone() == (1,)
        cur = await conn.execute("SELECT count(*) FROM warden.timeline WHERE kind = 'run.created'")
        assert await cur.fetchone() == (1,)


async def test_run_input_must_be_an_object_and_nothing_is_stored(
        db: Database, svc: Services) -> None:
    await support.store(db, GATE)
    with pytest.raises(Exception, match="input: must be a JSON object"):
        await lifecycle.start(svc, tenant_id="default", workflow_id="gate", input=[1, 2],
                         created_by="alice")
    with pytest.raises(NotFound):
        await support.start(db, "no-such-workflow")
    async with db.connection() as conn:
        assert await (await conn.execute("SELECT count(*) FROM warden.runs")).fetchone() == (0,)


async def test_stored_versions_are_immutable_and_runs_pin_theirs(
        db: Database, scheduler: Scheduler) -> None:
    stored = await workflows.store(db, tenant_id="default", source=GATE, media_type=None,
                                   created_by="a")
    again = await workflows.store(db, tenant_id="default", source=GATE, media_type=None,
                                  created_by="a")
    assert stored.created and not again.created
    with pytest.raises(Conflict, match="immutable"):
        await support.store(db, GATE.replace("t.act", "t.other"))
    run = await support.start(db, "gate")
    await support.store(db, GATE.replace("1.0.0", "1.1.0").replace("t.act", "t.v2"))
    newer = await support.start(db, "gate")
    assert (run.workflow_version, newer.workflow_version) == ("1.0.0", "1.1.0")
    with pytest.raises(InvalidDefinition, match="cycle"):
        await support.store(db, GATE.replace("version: 1.0.0", "version: 2.0.0").replace(
            "ask: {type: approval, expires_in_ms: 600000}",
            "ask: {type: approval, depends_on: [act]}"))


async def _waiting_gate(db: Database, scheduler: Scheduler,
                       by: str = "alice") -> tuple[RunRow, ApprovalRow]:
    await support.store(db, GATE)
    run = await support.start(db, "gate", by=by)
    await support.settle(scheduler)
    [approval] = (await support.detail(db, run.run_id)).approvals
    return run, approval


async def test_the_runs_starter_cannot_approve_even_through_raw_sql(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    _run, approval = await _waiting_gate(db, scheduler, by="alice")
    with pytest.raises(Forbidden):
        await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                               approve=True, principal="alice")
    # the starter is in barred (approvals_starter_barred), whose check names the rule
    with psycopg.connect(db_url) as conn, pytest.raises(
            psycopg.errors.CheckViolation, match="approvals_no_rerun_chain_approval"):
        conn.execute("UPDATE warden.approvals SET status = 'approved', decided_by = 'alice', "
                     "decided_at = now()")
    row = await approvals.show(db, None, approval.approval_id)
    assert row.status is ApprovalStatus.PENDING


async def test_an_approval_is_decided_once_and_the_first_decision_stands(
        db: Database, scheduler: Scheduler) -> None:
    _run, approval = await _waiting_gate(db, scheduler)
    approval_id = approval.approval_id
    await approvals.decide(db, tenant_id="default", approval_id=approval_id, approve=True,
                           principal="bob", reason="fine")
    with pytest.raises(Conflict, match="already approved"):
        await approvals.decide(db, tenant_id="default", approval_id=approval_id,
                               approve=False, principal="carol", reason="second thoughts")
    row = await approvals.show(db, None, approval_id)
    assert (row.status, row.decided_by, row.reason) == (ApprovalStatus.APPROVED, "bob", "fine")
    with pytest.raises(NotFound):  # another tenant's approval does not exist for it
        await approvals.decide(db, tenant_id="other", approval_id=approval_id, approve=True,
                               principal="bob")


async def test_a_job_hash_that_differs_is_refused(db: Database, scheduler: Scheduler) -> None:
    _run, approval = await _waiting_gate(db, scheduler)
    with pytest.raises(Conflict, match="job hash"):
        await approvals.decide(db, tenant_id="default",
                               approval_id=approval.approval_id,
                               approve=True, principal="bob", job_hash="0" * 64)


async def test_an_expired_approval_times_out_the_step_and_the_run(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, GATE)  # expires in 10 minutes
    run = await support.start(db, "gate")
    await support.settle(scheduler)
    [approval] = (await support.detail(db, run.run_id)).approvals
    await support.advance_clock(db, 601)
    with pytest.raises(Exception, match="expired"):
        await approvals.decide(db, tenant_id="default", approval_id=approval.approval_id,
                               approve=True, principal="bob")
    assert (await Reaper(db).run_once()).approvals == 1
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.approvals[0].status is ApprovalStatus.EXPIRED
    assert [s.status for s in detail.steps] == [StepStatus.TIMED_OUT, StepStatus.SKIPPED]
    assert detail.run.status is RunStatus.TIMED_OUT
    assert (await support.kinds(db, run.run_id))[-1] == "run.timed_out"
