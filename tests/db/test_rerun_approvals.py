"""Reruns ask again (issue 10): a rerun that runs gated work again asks for approvals of
its own, an approval is used by the run it was given for, once, nobody who started a run
of the rerun chain can decide the rerun's approvals, and what an approval is about never
changes after insert — each checked against the attack that worked before, through the
engine and through raw SQL."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest

from engine.core.enums import ApprovalStatus, JobStatus, RunStatus, StepStatus
from engine.core.errors import Conflict, Forbidden, InvalidTransition
from engine.governance import approvals, decisions
from engine.governance.policy import Verdict
from engine.runs import reruns
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store.connection import translate
from engine.store.migrate import downgrade, upgrade
from engine.store.records import ApprovalRow, RunRow
from tests import support

pytestmark = pytest.mark.anyio

# ask gates b; a is upstream of the gate and b is the work behind it
CHAIN = """
id: chain
name: chain
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
  ask: {type: approval, depends_on: [a], expires_in_ms: 600000}
  b: {type: job, topic: t.b, depends_on: [ask]}
  tell: {type: notify, depends_on: [b]}
"""

PAY = """
id: pay
name: payments
version: 1.0.0
steps:
  quote: {type: job, topic: pay.quote}
  charge: {type: job, topic: pay.charge, depends_on: [quote]}
"""


async def work(svc: Services, scheduler: Scheduler, topics: list[str]) -> None:
    """Scheduler passes and a worker completing every claimable job, until nothing moves."""
    while True:
        await support.settle(scheduler)
        claimed = await support.claim(svc.db, topics)
        if not claimed:
            return
        for job in claimed:
            await support.complete(svc.db, job)


async def pending_of(svc: Services, run_id: UUID) -> ApprovalRow:
    [pending] = [a for a in (await support.detail(svc, run_id)).approvals
                 if a.status is ApprovalStatus.PENDING]
    return pending


async def approve(svc: Services, approval: ApprovalRow, by: str) -> ApprovalRow:
    return await approvals.decide(svc.db, tenant_id="default",
                                  approval_id=approval.approval_id, approve=True, principal=by)


async def finished_chain_run(svc: Services, scheduler: Scheduler) -> RunRow:
    """alice starts a run of CHAIN, bob approves its gate, it succeeds."""
    await support.store(svc.db, CHAIN)
    run = await support.start(svc, "chain", by="alice")
    await work(svc, scheduler, ["t.a", "t.b"])
    await approve(svc, await pending_of(svc, run.run_id), "bob")
    await work(svc, scheduler, ["t.a", "t.b"])
    assert (await support.detail(svc, run.run_id)).run.status is RunStatus.SUCCEEDED
    return run


async def rerun(svc: Services, run_id: UUID, from_step: str, by: str) -> RunRow:
    _plan, started = await reruns.rerun(svc, tenant_id="default", run_id=run_id,
                                        from_step=from_step, created_by=by)
    return started.run


# ---------------------------------------------------------------- asking again

async def test_a_rerun_behind_an_approval_step_asks_again_before_the_work_runs(
        svc: Services, scheduler: Scheduler) -> None:
    """The attack: rerun from the step behind the gate; the rerun reused the original's
    approved gate and the gated job ran again with no human decision."""
    original = await finished_chain_run(svc, scheduler)
    [given] = (await support.detail(svc, original.run_id)).approvals
    plan = await reruns.plan(svc, tenant_id="default", run_id=original.run_id, from_step="b",
                             by="olga")
    assert (plan.to_run, plan.approvals_needed) == (["ask", "b", "tell"], ["ask"])
    assert (list(plan.reused), plan.barred_approvers) == (["a"], ["alice", "olga"])
    again = await rerun(svc, original.run_id, "b", "olga")
    await support.settle(scheduler)
    assert await support.claim(svc.db, ["t.a", "t.b"]) == []  # nothing runs undecided
    detail = await support.detail(svc, again.run_id)
    assert detail.run.status is RunStatus.WAITING
    steps = {s.step_id: s.status for s in detail.steps}
    assert steps == {"a": StepStatus.SUCCEEDED, "ask": StepStatus.WAITING,
                     "b": StepStatus.PENDING, "tell": StepStatus.PENDING}
    [asked] = detail.approvals
    assert (asked.run_id, asked.step_id, asked.status) == (again.run_id, "ask",
                                                          ApprovalStatus.PENDING)
    assert asked.approval_id != given.approval_id
    assert asked.barred == ["alice", "olga"]
    requested = [e.data for e in await support.events(svc.db, again.run_id)
                 if e.kind == "approval.requested"]
    assert [r["barred"] for r in requested] == [["alice", "olga"]]
    # the original's approval is spent: deciding it again changes nothing
    with pytest.raises(Conflict, match="already approved"):
        await approve(svc, given, "bob")
    assert (await support.detail(svc, again.run_id)).run.status is RunStatus.WAITING
    await approve(svc, asked, "bob")
    await work(svc, scheduler, ["t.a", "t.b"])
    detail = await support.detail(svc, again.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert [j.step_id for j in detail.jobs] == ["b"]  # a was reused, b ran after the decision


async def test_a_rerun_of_only_what_follows_the_work_asks_nothing(
        svc: Services, scheduler: Scheduler) -> None:
    """A notify step is not work behind the gate: rerunning it alone needs no decision."""
    original = await finished_chain_run(svc, scheduler)
    plan = await reruns.plan(svc, tenant_id="default", run_id=original.run_id,
                             from_step="tell")
    assert (plan.to_run, plan.approvals_needed) == (["tell"], [])
    again = await rerun(svc, original.run_id, "tell", "olga")
    await support.settle(scheduler)
    detail = await support.detail(svc, again.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED and detail.approvals == []


async def test_a_rerun_asks_a_policy_approval_again_bound_to_its_own_job(
        db: Database, scheduler: Scheduler) -> None:
    gov = Services.create(db, policy_default=Verdict.DENY, approval_expires_ms=60_000)
    scheduler = Scheduler(gov)
    await support.store(db, PAY)
    stored = await decisions.store_bundle(db, tenant_id="default", created_by="admin",
                                          media_type=None, source="""
default_decision: allow
rules:
  - {name: ask, match: {topics: [pay.charge]}, decision: require_approval, reason: money}
""")
    await decisions.activate(db, tenant_id="default", activated_by="admin",
                             snapshot_hash=stored.row.snapshot_hash)
    run = await support.start(gov, "pay", {"amount": 5}, by="alice")
    await work(gov, scheduler, ["pay.quote", "pay.charge"])
    given = await pending_of(gov, run.run_id)
    await approve(gov, given, "bob")
    await work(gov, scheduler, ["pay.quote", "pay.charge"])
    plan = await reruns.plan(gov, tenant_id="default", run_id=run.run_id,
                             from_step="charge", by="olga")
    assert (plan.to_run, plan.approvals_needed) == (["charge"], ["charge"])
    assert plan.decisions["charge"].decision.verdict is Verdict.REQUIRE_APPROVAL
    again = await rerun(gov, run.run_id, "charge", "olga")
    await support.settle(scheduler)
    assert await support.claim(db, ["pay.charge"]) == []
    asked = await pending_of(gov, again.run_id)
    assert asked.job_id == f"{again.run_id}:charge@1" and asked.run_id == again.run_id
    assert asked.barred == ["alice", "olga"]
    with pytest.raises(Conflict, match="already approved"):
        await approve(gov, given, "bob")
    # the database keeps a policy approval on a job of its own run and step
    async with db.connection() as conn:
        with pytest.raises(psycopg.errors.CheckViolation, match="approvals_job_of_own_step"):
            await conn.execute(
                "INSERT INTO warden.approvals (tenant_id, run_id, step_id, job_id, kind, "
                "requested_by) VALUES ('default', %s, 'charge', %s, 'policy', 'alice')",
                [run.run_id, asked.job_id])
        with pytest.raises(psycopg.errors.ForeignKeyViolation,
                           match="approvals_job_of_own_run"):
            await conn.execute(
                "INSERT INTO warden.approvals (tenant_id, run_id, step_id, job_id, kind, "
                "requested_by) VALUES ('default', %s, 'charge', %s, 'policy', 'alice')",
                [run.run_id, f"{run.run_id}:charge@9"])
    [job] = [j for j in (await support.detail(gov, again.run_id)).jobs if j.step_id == "charge"]
    assert job.status is JobStatus.BLOCKED
    await approve(gov, asked, "bob")
    await work(gov, scheduler, ["pay.quote", "pay.charge"])
    assert (await support.detail(gov, again.run_id)).run.status is RunStatus.SUCCEEDED


# ---------------------------------------------------------------- who may decide

async def test_nobody_who_started_a_run_of_the_chain_can_decide_the_reruns_approvals(
        svc: Services, scheduler: Scheduler, db_url: str) -> None:
    original = await finished_chain_run(svc, scheduler)  # alice
    first = await rerun(svc, original.run_id, "b", "olga")
    await support.settle(scheduler)
    await approve(svc, await pending_of(svc, first.run_id), "bob")
    await work(svc, scheduler, ["t.a", "t.b"])
    plan = await reruns.plan(svc, tenant_id="default", run_id=first.run_id, from_step="b",
                             by="dave")
    assert (plan.approvals_needed, plan.barred_approvers) == (["ask"], ["alice", "dave", "olga"])
    second = await rerun(svc, first.run_id, "b", "dave")
    await support.settle(scheduler)
    asked = await pending_of(svc, second.run_id)
    assert asked.barred == ["alice", "dave", "olga"] and asked.requested_by == "dave"
    why = {"alice": f"'alice' started run {original.run_id}, which run {second.run_id} reruns",
           "olga": f"'olga' started run {first.run_id}, which run {second.run_id} reruns",
           "dave": f"'dave' started run {second.run_id} and cannot decide its approvals"}
    for principal, message in why.items():
        for approve_it in (True, False):
            with pytest.raises(Forbidden) as refused:
                await approvals.decide(svc.db, tenant_id="default", approve=approve_it,
                                       approval_id=asked.approval_id, principal=principal,
                                       reason="checked")
            assert message in str(refused.value)
        # and the database refuses it whoever asks, without the engine's check
        with psycopg.connect(db_url) as conn, pytest.raises(
                psycopg.errors.CheckViolation, match="approvals_no_rerun_chain_approval"):
            conn.execute("UPDATE warden.approvals SET status = 'approved', decided_by = %s, "
                         "decided_at = now() WHERE approval_id = %s",
                         [principal, asked.approval_id])
    assert (await pending_of(svc, second.run_id)).approval_id == asked.approval_id
    decided = await approve(svc, asked, "bob")
    assert (decided.status, decided.decided_by) == (ApprovalStatus.APPROVED, "bob")


async def test_an_inserter_can_bar_more_principals_never_fewer(
        svc: Services, scheduler: Scheduler, db_url: str) -> None:
    original = await finished_chain_run(svc, scheduler)
    again = await rerun(svc, original.run_id, "b", "olga")
    insert = ("INSERT INTO warden.approvals (tenant_id, run_id, step_id, kind, requested_by, "
              "barred) VALUES ('default', %s, 'a', 'step', %s, %s) RETURNING barred")
    with psycopg.connect(db_url) as conn:
        assert conn.execute(insert, [again.run_id, "olga", []]).fetchone() == (["alice", "olga"],)
        conn.rollback()
        assert conn.execute(insert, [again.run_id, "olga", ["zed"]]).fetchone() == (
            ["alice", "olga", "zed"],)
        conn.rollback()
        with pytest.raises(psycopg.Error, match="requested by olga, who started it, not by bob"):
            conn.execute(insert, [again.run_id, "bob", ["bob"]])


# ---------------------------------------------------------------- immutable identity

IDENTITY_CHANGES = {
    # the attack of the issue: the starter decides and renames the requester in one statement
    "requested_by": "requested_by = 'mallory', barred = '{mallory}'",
    "run_id": "run_id = %(other_run)s",
    "step_id": "step_id = 'a'",
    "job_id": "job_id = %(other_job)s",
    "kind": "kind = 'policy'",
    "policy_snapshot_hash": "policy_snapshot_hash = repeat('1', 64)",
    "job_hash": "job_hash = repeat('2', 64)",
    "requested_at": "requested_at = requested_at - interval '1 day'",
    "expires_at": "expires_at = expires_at + interval '1 year'",
    "barred": "barred = '{alice}'",
    "tenant_id": "tenant_id = 'other'",
    "approval_id": "approval_id = gen_random_uuid()",
}


@pytest.mark.parametrize("column", sorted(IDENTITY_CHANGES))
async def test_a_decision_cannot_change_what_the_approval_is_about(
        svc: Services, scheduler: Scheduler, db_url: str, column: str) -> None:
    original = await finished_chain_run(svc, scheduler)
    again = await rerun(svc, original.run_id, "b", "olga")
    await support.settle(scheduler)
    asked = await pending_of(svc, again.run_id)
    decider = "alice" if column == "requested_by" else "bob"
    statement = ("UPDATE warden.approvals SET status = 'approved', decided_by = %(decider)s, "
                 f"decided_at = now(), {IDENTITY_CHANGES[column]} WHERE approval_id = %(id)s")
    params: dict[str, Any] = {"decider": decider, "id": asked.approval_id,
                              "other_run": original.run_id,
                              "other_job": f"{original.run_id}:a@1"}
    with psycopg.connect(db_url) as conn, pytest.raises(
            psycopg.Error, match=f"{column}.* never change after insert"):
        conn.execute(statement, params)
    assert await pending_of(svc, again.run_id) == asked  # nothing changed


@pytest.mark.parametrize("change", [
    "decided_by = 'carol'", "status = 'rejected'", "reason = 'rewritten'",
    "decided_at = decided_at + interval '1 hour'"])
async def test_a_decided_approval_never_changes_again(
        svc: Services, scheduler: Scheduler, db_url: str, change: str) -> None:
    original = await finished_chain_run(svc, scheduler)
    [given] = (await support.detail(svc, original.run_id)).approvals
    with psycopg.connect(db_url) as conn, pytest.raises(
            psycopg.Error, match="is already approved: it never changes") as refused:
        conn.execute(f"UPDATE warden.approvals SET {change} WHERE approval_id = %s",
                     [given.approval_id])
    assert isinstance(translate(refused.value), InvalidTransition)  # a typed error, never a 500
    assert (await support.detail(svc, original.run_id)).approvals == [given]


# ---------------------------------------------------------------- the revision

async def test_the_revision_bars_the_chain_of_pending_approvals_and_rewrites_no_decision(
        svc: Services, scheduler: Scheduler, db_url: str) -> None:
    """Upgrading a database that holds approvals: pending ones get their whole chain, a
    decision taken under the old rule (a starter of the original approving a rerun) stays
    as it was, and the revision goes down and up again cleanly."""
    original = await finished_chain_run(svc, scheduler)
    again = await rerun(svc, original.run_id, "b", "olga")
    await support.settle(scheduler)
    asked = await pending_of(svc, again.run_id)
    downgrade(db_url, "0001_baseline")
    with psycopg.connect(db_url) as conn:
        # allowed before this revision: alice started the original, not the rerun
        conn.execute("UPDATE warden.approvals SET status = 'approved', decided_by = 'alice', "
                     "decided_at = now() WHERE approval_id = %s", [asked.approval_id])
        pending = conn.execute(
            "INSERT INTO warden.approvals (tenant_id, run_id, step_id, kind, requested_by) "
            "VALUES ('default', %s, 'a', 'step', 'olga') RETURNING approval_id",
            [again.run_id]).fetchone()
        assert pending is not None
    upgrade(db_url)
    with psycopg.connect(db_url) as conn:
        barred = dict(conn.execute("SELECT approval_id, barred FROM warden.approvals "
                                   "WHERE run_id = %s", [again.run_id]).fetchall())
    assert barred == {asked.approval_id: ["olga"], pending[0]: ["alice", "olga"]}
