"""Policy gates at submit and dispatch, drift, policy approvals and constraints (issue 3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

import anyio
import pytest

from engine.core.enums import ApprovalStatus, JobStatus, RunStatus, StepStatus
from engine.core.errors import Conflict, PolicyDenied
from engine.daemons.reaper import Reaper
from engine.governance import approvals, decisions
from engine.governance.policy import Facts, Verdict
from engine.runs import reruns
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from tests import support

pytestmark = pytest.mark.anyio

TWO_STEPS = """
id: pay
name: payments
version: 1.0.0
steps:
  quote: {type: job, topic: pay.quote}
  charge:
    type: job
    topic: pay.charge
    depends_on: [quote]
    retries: {max_attempts: 3, backoff_ms: 0}
    timeout_ms: 600000
    meta: {risk_tags: [money], capability: payments, labels: {env: prod}}
"""

ALLOW_ALL = """
default_decision: allow
rules: []
"""


def bundle(*rules: str, default: str = "allow") -> str:
    return f"default_decision: {default}\nrules:\n" + "".join(rules)


def rule(name: str, decision: str, match: str = "{}", constraints: str = "") -> str:
    extra = f"\n    constraints: {constraints}" if constraints else ""
    return (f"  - name: {name}\n    match: {match}\n    decision: {decision}\n"
            f"    reason: because {name}{extra}\n")


@pytest.fixture
def gov(db: Database) -> Services:
    """Deny by default, like a fresh installation."""
    return Services.create(db, policy_default=Verdict.DENY, approval_expires_ms=60_000)


@pytest.fixture
def gov_scheduler(gov: Services) -> Scheduler:
    return Scheduler(gov)


activate = support.activate_policy


async def rows(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()


async def to_charge(svc: Services, scheduler: Scheduler, **input: Any) -> Any:
    """Starts a payment run and completes its quote step: charge is dispatched next."""
    run = await support.start(svc, "pay", input or {"amount": 10})
    await support.settle(scheduler)
    [quote] = await support.claim(svc.db, ["pay.quote"])
    await support.complete(svc.db, quote, {"price": 10})
    await support.settle(scheduler)
    return run


# ---------------------------------------------------------------- submit gate

async def test_without_an_active_snapshot_the_configured_default_denies_at_submit(
        gov: Services) -> None:
    await support.store(gov.db, TWO_STEPS)
    with pytest.raises(PolicyDenied) as denied:
        await support.start(gov, "pay", {"amount": 1})
    assert denied.value.rule is None and "no policy is active" in (denied.value.reason or "")
    [(status,)] = await rows(gov.db, "SELECT status::text FROM warden.runs")
    assert status == "denied"
    recorded = await rows(gov.db, "SELECT stage::text, decision::text, snapshot_hash, job_id "
                                  "FROM warden.policy_decisions ORDER BY decision_id")
    assert recorded == [("submit", "deny", None, None)] * 2
    assert await rows(gov.db, "SELECT * FROM warden.jobs") == []  # nothing dispatched


async def test_a_deny_at_submit_names_run_step_rule_and_reason_and_stores_the_run(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    snapshot = await activate(gov, bundle(
        rule("big-charges", "deny", '{topics: ["pay.*"], input: ["input.amount > 1000"]}')))
    with pytest.raises(PolicyDenied) as denied:
        await support.start(gov, "pay", {"amount": 5000})
    error = denied.value
    # both steps match; the error names the first denied step by id
    assert (error.step_id, error.rule, error.reason) == ("charge", "big-charges",
                                                         "because big-charges")
    assert error.run_id is not None and error.run_id in str(error)
    detail = await support.detail(gov, UUID(error.run_id))
    assert detail.run.status is RunStatus.DENIED
    assert {s.status for s in detail.steps} == {StepStatus.DENIED}
    assert (await support.kinds(gov.db, detail.run.run_id)) == [
        "run.created", "policy.decision", "policy.decision", "run.denied"]
    [(recorded,)] = await rows(gov.db, "SELECT DISTINCT snapshot_hash FROM "
                                       "warden.policy_decisions")
    assert recorded == snapshot
    await gov_scheduler.run_once()
    assert await rows(gov.db, "SELECT * FROM warden.jobs") == []
    # a small amount is allowed: the rule compares the input
    run = await support.start(gov, "pay", {"amount": 5})
    assert run.status is RunStatus.PENDING


async def test_require_approval_at_submit_lets_the_run_start(gov: Services) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}')))
    run = await support.start(gov, "pay")
    assert run.status is RunStatus.PENDING
    assert await rows(gov.db, "SELECT step_id, decision::text FROM warden.policy_decisions "
                              "ORDER BY step_id") == [("charge", "require_approval"),
                                                      ("quote", "allow")]


# ---------------------------------------------------------------- dispatch gate

async def test_allow_with_constraints_hands_constraints_to_the_worker_and_enforces_them(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule(
        "bounded", "allow_with_constraints", '{risk_tags: [money], labels: {env: prod}}',
        "{max_attempts: 1, timeout_ms: 1500, sandbox: strict}")))
    run = await to_charge(gov, gov_scheduler)
    [charge] = await support.claim(gov.db, ["pay.charge"], lease_s=600)
    assert charge.constraints == {"max_attempts": 1, "timeout_ms": 1500, "sandbox": "strict"}
    [(lease, started)] = await rows(gov.db, "SELECT lease_expires_at, started_at FROM "
                                            "warden.jobs WHERE step_id = 'charge'")
    assert lease - started == timedelta(milliseconds=1500)  # timeout_ms bounds the lease
    await support.fail(gov.db, charge)  # retryable, but max_attempts 1 overrides retries: 3
    await support.settle(gov_scheduler)
    detail = await support.detail(gov, run.run_id)
    assert detail.steps[1].status is StepStatus.FAILED and detail.steps[1].attempts == 1
    assert detail.run.status is RunStatus.FAILED


async def test_require_approval_at_dispatch_blocks_the_job_until_approved(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    snapshot = await activate(gov, bundle(
        rule("ask", "require_approval", '{topics: ["pay.charge"]}')))
    run = await to_charge(gov, gov_scheduler)
    assert await support.claim(gov.db, ["pay.charge"]) == []
    detail = await support.detail(gov, run.run_id)
    assert detail.run.status is RunStatus.WAITING
    [job] = [j for j in detail.jobs if j.step_id == "charge"]
    assert job.status is JobStatus.BLOCKED
    [approval] = detail.approvals
    assert (approval.kind, approval.job_id, approval.policy_snapshot_hash) == (
        "policy", job.job_id, snapshot)
    expected = decisions.job_hash(tenant_id="default", run_id=run.run_id, step_id="charge",
                                   topic="pay.charge", input=job.input, upstream=job.upstream,
                                   constraints=job.constraints)
    assert approval.job_hash == expected
    await approvals.decide(gov.db, tenant_id="default", approval_id=approval.approval_id,
                           approve=True, principal="bob", job_hash=expected)
    [charge] = await support.claim(gov.db, ["pay.charge"])
    await support.complete(gov.db, charge)
    await support.settle(gov_scheduler)
    assert (await support.detail(gov, run.run_id)).run.status is RunStatus.SUCCEEDED


async def test_deny_at_dispatch_denies_job_step_and_run(gov: Services,
                                                        gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    # allowed at submit; a deny activated while quote runs meets charge at its dispatch
    await activate(gov, bundle(rule("allow-all", "allow")))
    run = await support.start(gov, "pay", {"amount": 10})
    await support.settle(gov_scheduler)
    await activate(gov, bundle(rule("no-charges", "deny", '{topics: ["pay.charge"]}'),
                               default="allow"))
    await support.settle(gov_scheduler)  # quote drifted: re-evaluated (allowed) first
    [quote] = await support.claim(gov.db, ["pay.quote"])
    await support.complete(gov.db, quote)
    await support.settle(gov_scheduler)
    detail = await support.detail(gov, run.run_id)
    [job] = [j for j in detail.jobs if j.step_id == "charge"]
    assert job.status is JobStatus.DENIED and job.finished_at is not None
    assert detail.steps[1].status is StepStatus.DENIED
    assert detail.steps[1].error["rule"] == "no-charges"
    assert detail.run.status is RunStatus.DENIED
    made = await decisions.decisions_of_job(gov.db, "default", job.job_id)
    assert [(d.stage, d.decision, d.rule) for d in made] == [
        ("dispatch", "deny", "no-charges")]


# ---------------------------------------------------------------- drift

async def test_a_deny_activated_between_dispatch_and_claim_means_the_job_never_runs(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, ALLOW_ALL)
    run = await to_charge(gov, gov_scheduler)  # charge is pending, dispatched under ALLOW_ALL
    await activate(gov, bundle(rule("stop", "deny", '{topics: ["pay.charge"]}')))
    # before the scheduler even looks: the claim-time guard refuses the drifted job
    assert await support.claim(gov.db, ["pay.charge"]) == []
    await support.settle(gov_scheduler)
    assert await support.claim(gov.db, ["pay.charge"]) == []
    detail = await support.detail(gov, run.run_id)
    assert [j.status for j in detail.jobs if j.step_id == "charge"] == [JobStatus.DENIED]
    assert detail.run.status is RunStatus.DENIED


async def test_drift_allow_to_require_approval_blocks_a_pending_job(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, ALLOW_ALL)
    run = await to_charge(gov, gov_scheduler)
    snapshot = await activate(gov, bundle(rule("ask", "require_approval",
                                               '{topics: ["pay.charge"]}')))
    await support.settle(gov_scheduler)
    assert await support.claim(gov.db, ["pay.charge"]) == []
    detail = await support.detail(gov, run.run_id)
    assert detail.run.status is RunStatus.WAITING
    [approval] = detail.approvals
    assert approval.policy_snapshot_hash == snapshot and approval.status is ApprovalStatus.PENDING


async def test_drift_require_approval_to_allow_supersedes_and_releases(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}')))
    run = await to_charge(gov, gov_scheduler)
    await activate(gov, ALLOW_ALL)
    await support.settle(gov_scheduler)
    [charge] = await support.claim(gov.db, ["pay.charge"])
    detail = await support.detail(gov, run.run_id)
    assert [a.status for a in detail.approvals] == [ApprovalStatus.SUPERSEDED]
    assert detail.run.status is RunStatus.RUNNING
    kinds = await support.kinds(gov.db, run.run_id)
    assert "approval.superseded" in kinds and kinds[-1] == "job.claimed"
    with pytest.raises(Conflict):  # a superseded approval cannot be decided any more
        await approvals.decide(gov.db, tenant_id="default",
                               approval_id=detail.approvals[0].approval_id, approve=True,
                               principal="bob")
    await support.complete(gov.db, charge)


async def test_drift_to_a_new_require_approval_snapshot_requests_a_new_approval(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}')))
    run = await to_charge(gov, gov_scheduler)
    newer = await activate(gov, bundle(rule("ask-again", "require_approval",
                                            '{topics: ["pay.*"]}')))
    await support.settle(gov_scheduler)
    detail = await support.detail(gov, run.run_id)
    assert [(a.status, a.policy_snapshot_hash == newer) for a in detail.approvals] == [
        (ApprovalStatus.SUPERSEDED, False), (ApprovalStatus.PENDING, True)]
    assert detail.run.status is RunStatus.WAITING


# ---------------------------------------------------------------- approvals

async def test_a_policy_approval_expires_and_times_out_job_step_and_run(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}',
                                    "{approval_expires_in_ms: 600000}")))
    run = await to_charge(gov, gov_scheduler)
    await support.advance_clock(gov.db, 601)
    assert (await Reaper(gov.db).run_once()).approvals == 1
    await support.settle(gov_scheduler)
    detail = await support.detail(gov, run.run_id)
    assert [j.status for j in detail.jobs if j.step_id == "charge"] == [JobStatus.TIMED_OUT]
    assert detail.steps[1].status is StepStatus.TIMED_OUT
    assert detail.run.status is RunStatus.TIMED_OUT


async def test_an_approval_is_not_reusable_when_a_rerun_changes_the_job(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}')))
    run = await to_charge(gov, gov_scheduler)
    [first] = (await support.detail(gov, run.run_id)).approvals
    await approvals.decide(gov.db, tenant_id="default", approval_id=first.approval_id,
                           approve=True, principal="bob")
    [charge] = await support.claim(gov.db, ["pay.charge"])
    await support.complete(gov.db, charge)
    await support.settle(gov_scheduler)
    # rerun from quote: a new quote output changes what charge would receive
    _plan, started = await reruns.rerun(gov, tenant_id="default", run_id=run.run_id,
                                        from_step="quote", created_by="alice")
    await support.settle(gov_scheduler)
    [quote] = await support.claim(gov.db, ["pay.quote"])
    await support.complete(gov.db, quote, {"price": 99})
    await support.settle(gov_scheduler)
    [second] = (await support.detail(gov, started.run.run_id)).approvals
    assert second.job_hash != first.job_hash
    with pytest.raises(Conflict, match="job hash"):
        await approvals.decide(gov.db, tenant_id="default", approval_id=second.approval_id,
                               approve=True, principal="bob", job_hash=first.job_hash)


async def test_evaluate_has_no_side_effects(gov: Services) -> None:
    snapshot = await activate(gov, bundle(rule("money", "deny", "{risk_tags: [money]}")))
    async with gov.db.connection() as conn:
        before = await rows(gov.db, "SELECT count(*) FROM warden.policy_decisions")
        evaluated = await gov.policies.evaluate(conn, "default", Facts(
            tenant_id="default", workflow_id="pay", step_id="charge", topic="pay.charge",
            risk_tags=("money",), input={}))
    assert (evaluated.snapshot_hash, evaluated.decision.rule) == (snapshot, "money")
    assert evaluated.decision.verdict is Verdict.DENY
    assert await rows(gov.db, "SELECT count(*) FROM warden.policy_decisions") == before


async def test_storing_a_bundle_twice_yields_one_snapshot_and_activation_is_recorded(
        gov: Services) -> None:
    first = await decisions.store_bundle(gov.db, tenant_id="default", source=ALLOW_ALL,
                                          media_type=None, created_by="admin")
    again = await decisions.store_bundle(
        gov.db, tenant_id="default", source='{"rules": [], "default_decision": "allow"}',
        media_type="application/json", created_by="admin")
    assert (first.created, again.created) == (True, False)
    assert first.row.snapshot_hash == again.row.snapshot_hash
    other = await activate(gov, bundle(rule("x", "deny")))
    await decisions.activate(gov.db, tenant_id="default",
                              snapshot_hash=first.row.snapshot_hash, activated_by="carol")
    history = await rows(gov.db, "SELECT snapshot_hash, previous_hash, activated_by FROM "
                                 "warden.policy_activations ORDER BY activation_id")
    assert history == [(other, None, "admin"), (first.row.snapshot_hash, other, "carol")]


async def test_seed_workflow_waits_twice_gate_and_policy_with_both_hashes_recorded(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, support.SEED_WORKFLOW.replace(
        "    retries: {max_attempts: 2, backoff_ms: 5000}",
        "    retries: {max_attempts: 2, backoff_ms: 5000}\n    meta: {risk_tags: [prod]}"))
    snapshot = await activate(gov, bundle(rule(
        "prod-apply", "require_approval",
        '{topics: ["job.incident.patch.apply"], risk_tags: [prod]}')))
    run = await support.start(gov, "incident-remediation", {"incident_id": "INC-1"})
    for _ in range(3):
        await support.settle(gov_scheduler)
        [job] = await support.claim(gov.db, support.SEED_TOPICS)
        await support.complete(gov.db, job)
    await support.settle(gov_scheduler)
    for expected_kind in ("step", "policy"):
        detail = await support.detail(gov, run.run_id)
        assert detail.run.status is RunStatus.WAITING
        [pending] = [a for a in detail.approvals if a.status is ApprovalStatus.PENDING]
        assert pending.kind == expected_kind
        await approvals.decide(gov.db, tenant_id="default", approval_id=pending.approval_id,
                               approve=True, principal="bob", job_hash=pending.job_hash)
        await support.settle(gov_scheduler)
    [job] = await support.claim(gov.db, support.SEED_TOPICS)
    await support.complete(gov.db, job)
    await support.settle(gov_scheduler)
    assert (await support.detail(gov, run.run_id)).run.status is RunStatus.SUCCEEDED
    events = await support.events(gov.db, run.run_id)
    requested = [e.data for e in events if e.kind == "approval.requested"]
    assert [r["kind"] for r in requested] == ["step", "policy"]
    assert all(len(r["job_hash"]) == 64 and r["policy_snapshot_hash"] == snapshot
               for r in requested)
    assert [e.kind for e in events].count("approval.approved") == 2
    async with gov.db.connection() as conn:
        blocked = await jobs_q.of_run(conn, "default", run.run_id)
    assert [j.status for j in blocked] == [JobStatus.SUCCEEDED] * 4


async def test_a_run_that_cannot_advance_holds_up_no_other_run_of_its_batch(
        gov: Services, gov_scheduler: Scheduler) -> None:
    """Its approval is locked by someone deciding it while a policy change needs it
    superseded: that run's pass fails (Busy), the scheduler retries the batch one run at a
    time, the others advance, and the busy run stays flagged, left out of the next batches
    for a moment, then advances once the lock is gone."""
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}')))
    stuck = await to_charge(gov, gov_scheduler)
    await activate(gov, ALLOW_ALL)
    other = await support.start(gov, "pay", {"amount": 5})
    async with gov.db.transaction() as holder:
        await holder.execute("SELECT 1 FROM warden.approvals WHERE run_id = %s FOR UPDATE",
                             [stuck.run_id])
        assert await gov_scheduler.run_once() == 2  # both taken in one batch
        assert await support.claim(gov.db, ["pay.quote"]) != []  # the other run advanced
        flagged = await rows(gov.db, "SELECT run_id FROM warden.runs WHERE needs_scheduling")
        assert flagged == [(stuck.run_id,)]
        assert await gov_scheduler.run_once() == 0  # held back, not failing every batch

    async def charge_claimable() -> list[Any]:
        await gov_scheduler.run_once()
        return await support.claim(gov.db, ["pay.charge"])

    [charge] = await support.wait_for(charge_claimable, timeout=10, what="the held run")
    assert charge.run_id == stuck.run_id
    assert other.run_id != stuck.run_id
    for run_id in (stuck.run_id, other.run_id):
        assert (await rows(gov.db, "SELECT warden.verify_timeline(%s)", run_id)) == [(True,)]


# ---------------------------------------------------------------- lock order

async def test_a_due_approval_whose_held_job_is_locked_waits_for_the_next_reap(
        gov: Services, gov_scheduler: Scheduler) -> None:
    """Lock order jobs -> approvals -> runs: the reaper locks the job a policy approval
    holds back before expiring the approval; a job someone holds is skipped, not waited
    on after the run (which deadlocked with a claimer or a canceller before)."""
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, bundle(rule("ask", "require_approval", '{topics: ["pay.charge"]}',
                                    "{approval_expires_in_ms: 600000}")))
    run = await to_charge(gov, gov_scheduler)
    await support.advance_clock(gov.db, 601)
    async with gov.db.transaction() as holder:
        await holder.execute("SELECT 1 FROM warden.jobs WHERE run_id = %s AND status = "
                             "'blocked' FOR UPDATE", [run.run_id])
        with anyio.fail_after(10):  # skipped at once, never waited on
            assert (await Reaper(gov.db).run_once()).approvals == 0
    assert (await Reaper(gov.db).run_once()).approvals == 1
    await support.settle(gov_scheduler)
    assert (await support.detail(gov, run.run_id)).run.status is RunStatus.TIMED_OUT


async def test_a_drifted_job_a_claimer_holds_fails_only_that_pass_and_is_judged_later(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.store(gov.db, TWO_STEPS)
    await activate(gov, ALLOW_ALL)
    run = await support.start(gov, "pay", {"amount": 5})
    await support.settle(gov_scheduler)
    newer = await activate(gov, bundle(rule("all", "allow", '{topics: ["pay.*"]}')))
    async with gov.db.transaction() as holder:
        await holder.execute("SELECT 1 FROM warden.jobs WHERE run_id = %s FOR UPDATE",
                             [run.run_id])
        with anyio.fail_after(10):  # NOWAIT: the pass fails at once instead of waiting
            await gov_scheduler.run_once()
        flagged = await rows(gov.db, "SELECT run_id FROM warden.runs WHERE needs_scheduling")
        assert flagged == [(run.run_id,)]

    async def rejudged() -> bool:
        await gov_scheduler.run_once()
        found = await rows(gov.db, "SELECT policy_snapshot_hash FROM warden.jobs "
                                   "WHERE run_id = %s", run.run_id)
        return found == [(newer,)]

    await support.wait_for(rejudged, timeout=10, what="the drifted job judged again")
