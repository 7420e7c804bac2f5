"""Dispatch in the completion (docs/design.md#dispatch-in-the-completion): a worker's
completion dispatches the steps it made ready where a dispatch plan allows it, writing
what the scheduler's dispatch gate would; everything else stays the scheduler's."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
import pytest

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

CHAIN = """
id: chain
name: chain
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
  b:
    type: job
    topic: t.b
    depends_on: [a]
    priority: 3
    timeout_ms: 90000
    retries: {max_attempts: 4, backoff_ms: 0}
  c: {type: job, topic: t.c, depends_on: [b], input: {mode: fixed, n: 2}}
"""

ALLOW_B = """
default_decision: deny
rules:
  - name: chain-steps
    match: {topics: [t.a, t.b, t.c]}
    decision: allow
    reason: the chain's own topics
"""


@pytest.fixture
def gov(db: Database) -> Services:
    """Deny by default: only the active snapshot allows anything."""
    return Services.create(db, policy_default=Verdict.DENY, approval_expires_ms=60_000)


@pytest.fixture
def gov_scheduler(gov: Services) -> Scheduler:
    return Scheduler(gov)


async def rows(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def run_to_b(svc: Services, scheduler: Scheduler, input: dict[str, Any]) -> UUID:
    """Starts a chain run, lets the scheduler dispatch a, and completes a."""
    run = await support.start(svc, "chain", input)
    await support.settle(scheduler)
    [a] = await support.claim(svc.db, ["t.a"])
    await support.complete(svc.db, a, {"from_a": input})
    return run.run_id


async def job_of(db: Database, run_id: UUID, step: str) -> tuple[Any, ...] | None:
    found = await rows(db, "SELECT status, priority, input, upstream, constraints, timeout_ms, "
                           "policy_snapshot_hash, traceparent, concurrency_key, rate_key, "
                           "checkpoint, available_at IS NOT NULL FROM warden.jobs "
                           "WHERE run_id = %s AND step_id = %s", run_id, step)
    return found[0] if found else None


async def after_completion(db: Database, run_id: UUID) -> list[tuple[str, str | None, str]]:
    """(kind, step, actor) of the run's events from the completion of a on."""
    events = await support.events(db, run_id)
    first = next(i for i, e in enumerate(events) if e.kind == "job.succeeded")
    return [(e.kind, e.step_id, e.actor) for e in events[first:]]


async def test_a_completion_dispatches_the_next_step_as_the_scheduler_would(
        gov: Services, gov_scheduler: Scheduler) -> None:
    snapshot = await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    # in SQL: the completion of a leaves b claimable, and the run unflagged
    in_sql = await run_to_b(gov, gov_scheduler, {"x": 1})
    assert await rows(gov.db, "SELECT needs_scheduling FROM warden.runs WHERE run_id = %s",
                      in_sql) == [(False,)]
    assert await after_completion(gov.db, in_sql) == [
        ("job.succeeded", "a", "w1"), ("step.ready", "b", "scheduler"),
        ("policy.decision", "b", "policy"), ("job.dispatched", "b", "scheduler")]
    # the same run through the scheduler, the plans gone (as the owner: nobody else can)
    await rows(gov.db, "DELETE FROM warden.dispatch_plans")
    by_pass = await run_to_b(gov, gov_scheduler, {"x": 1})
    assert await job_of(gov.db, by_pass, "b") is None  # left to the scheduler, flagged
    assert await rows(gov.db, "SELECT needs_scheduling FROM warden.runs WHERE run_id = %s",
                      by_pass) == [(True,)]
    await support.settle(gov_scheduler)
    assert await after_completion(gov.db, by_pass) == await after_completion(gov.db, in_sql)
    # the same job, step, decision and event data either way
    job = await job_of(gov.db, in_sql, "b")
    assert job == await job_of(gov.db, by_pass, "b")
    assert job is not None
    assert job[:7] == (JobStatus.PENDING, 5 * 10 + 3, {"x": 1}, {"a": {"from_a": {"x": 1}}},
                       {}, 90000, snapshot)
    steps = "SELECT status, attempts, max_attempts, retry_at, started_at IS NOT NULL " \
            "FROM warden.steps WHERE run_id = %s AND step_id = 'b'"
    assert await rows(gov.db, steps, in_sql) == await rows(gov.db, steps, by_pass) == [
        (StepStatus.RUNNING, 1, 4, None, True)]
    recorded = "SELECT stage, snapshot_hash, rule, decision, reason, constraints, " \
               "split_part(job_id, ':', 2) FROM warden.policy_decisions " \
               "WHERE run_id = %s AND stage = 'dispatch' AND step_id = 'b'"
    assert await rows(gov.db, recorded, in_sql) == await rows(gov.db, recorded, by_pass) == [
        ("dispatch", snapshot, "chain-steps", "allow", "the chain's own topics", {}, "b@1")]
    for run_id in (in_sql, by_pass):
        events = {e.kind: e for e in await support.events(gov.db, run_id) if e.step_id == "b"}
        decision = events["policy.decision"]
        [(decision_id,)] = await rows(gov.db, "SELECT decision_id FROM warden.policy_decisions "
                                              "WHERE run_id = %s AND step_id = 'b' "
                                              "AND stage = 'dispatch'", run_id)
        assert decision.data == {"stage": "dispatch", "decision": "allow",
                                 "rule": "chain-steps", "reason": "the chain's own topics",
                                 "constraints": {}, "snapshot_hash": snapshot,
                                 "decision_id": decision_id}
        assert decision.job_id == f"{run_id}:b@1" and decision.attempt == 1
        dispatched = events["job.dispatched"]
        assert set(dispatched.data) == {"topic", "available_at", "constraints"}
        assert dispatched.data["topic"] == "t.b" and dispatched.data["constraints"] == {}
        assert (await rows(gov.db, "SELECT warden.verify_timeline(%s)", run_id)) == [(True,)]


async def test_a_chain_runs_to_its_end_without_a_scheduler_pass_after_its_start(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    run_id = await run_to_b(gov, gov_scheduler, {"x": 2})
    [b] = await support.claim(gov.db, ["t.b"])
    await support.complete(gov.db, b, {"from_b": 1})
    [c] = await support.claim(gov.db, ["t.c"])
    assert c.input == {"mode": "fixed", "n": 2}  # the step's constant input
    assert c.upstream == {"b": {"from_b": 1}}
    await support.complete(gov.db, c, {"done": True})
    # the last completion ended the run; the scheduler only observes that
    [(status, output)] = await rows(gov.db, "SELECT status, output FROM warden.runs "
                                            "WHERE run_id = %s", run_id)
    assert (status, output) == (RunStatus.SUCCEEDED, {"c": {"done": True}})
    await support.settle(gov_scheduler)
    assert (await rows(gov.db, "SELECT warden.verify_timeline(%s)", run_id)) == [(True,)]


async def test_without_an_active_snapshot_every_dispatch_stays_the_schedulers(
        db: Database, scheduler: Scheduler) -> None:
    # the configured default (allow here) lives in each process: SQL cannot apply it
    await support.store(db, CHAIN)
    run_id = await run_to_b(support.services(db), scheduler, {"x": 3})
    assert await job_of(db, run_id, "b") is None
    assert await rows(db, "SELECT count(*) FROM warden.dispatch_plans") == [(0,)]
    await support.settle(scheduler)
    assert await job_of(db, run_id, "b") is not None


@pytest.mark.parametrize("policy", [
    # a rule that looks at the input could fire before the one that allows
    """default_decision: allow
rules:
  - name: big
    match: {input: ["input.x > 100"]}
    decision: deny
    reason: too big
""",
    # anything but a plain allow needs the scheduler: approvals, constraints
    """default_decision: allow
rules:
  - name: ask
    match: {topics: [t.b]}
    decision: require_approval
    reason: b needs a human
""",
    """default_decision: allow
rules:
  - name: slow
    match: {topics: [t.b]}
    decision: allow_with_constraints
    reason: b is slow
    constraints: {timeout_ms: 5000}
""",
])
async def test_no_plan_for_a_step_whose_decision_is_not_a_plain_allow_for_every_input(
        gov: Services, gov_scheduler: Scheduler, policy: str) -> None:
    await support.activate_policy(gov, policy)
    await support.store(gov.db, CHAIN)
    run_id = await run_to_b(gov, gov_scheduler, {"x": 1})
    plans = await rows(gov.db, "SELECT step_id FROM warden.dispatch_plans")
    assert ("b",) not in plans
    assert await job_of(gov.db, run_id, "b") is None  # the scheduler decides b
    await support.settle(gov_scheduler)
    assert await rows(gov.db, "SELECT count(*) FROM warden.policy_decisions WHERE run_id = %s "
                              "AND stage = 'dispatch' AND step_id = 'b'", run_id) == [(1,)]


async def test_a_plan_of_an_older_snapshot_is_not_applied(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    run = await support.start(gov, "chain", {"x": 1})
    await support.settle(gov_scheduler)
    [a] = await support.claim(gov.db, ["t.a"])
    assert await rows(gov.db, "SELECT count(*) FROM warden.dispatch_plans") == [(2,)]
    # a new snapshot denies b: the old snapshot's plan must not dispatch it
    newer = await support.activate_policy(gov, """default_decision: allow
rules:
  - name: no-b
    match: {topics: [t.b]}
    decision: deny
    reason: b is off
""")
    await support.complete(gov.db, a)
    assert await job_of(gov.db, run.run_id, "b") is None
    await support.settle(gov_scheduler)
    assert await rows(gov.db, "SELECT decision, snapshot_hash, rule FROM warden.policy_decisions "
                              "WHERE run_id = %s AND step_id = 'b' AND stage = 'dispatch'",
                      run.run_id) == [("deny", newer, "no-b")]
    assert await rows(gov.db, "SELECT status FROM warden.steps WHERE run_id = %s "
                              "AND step_id = 'b'", run.run_id) == [(StepStatus.DENIED,)]


async def test_a_run_past_its_deadline_gets_no_new_job_from_a_completion(
        gov: Services, gov_scheduler: Scheduler) -> None:
    await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN.replace("version: 1.0.0", "version: 1.0.0\n"
                                              "timeout_ms: 60000"))
    run = await support.start(gov, "chain", {"x": 1})
    await support.settle(gov_scheduler)
    [a] = await support.claim(gov.db, ["t.a"], lease_s=600)
    await support.advance_clock(gov.db, 120)
    await support.complete(gov.db, a)
    assert await job_of(gov.db, run.run_id, "b") is None


# ---------------------------------------------------------------- who may write a plan

PLAN = ("INSERT INTO warden.dispatch_plans (tenant_id, workflow_id, workflow_version, "
        "snapshot_hash, step_id, decision, rule, reason, created_by) "
        "VALUES (%s, 'chain', '1.0.0', %s, 'b', %s, NULL, 'x', 'mallory')")


async def test_a_plan_can_only_allow(gov: Services) -> None:
    snapshot = await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    for verdict in ("deny", "require_approval", "allow_with_constraints"):
        with pytest.raises(psycopg.errors.CheckViolation, match="dispatch_plans_allow_only"):
            await rows(gov.db, PLAN, "default", snapshot, verdict)


async def test_an_engine_session_writes_plans_for_its_tenants_only_and_a_worker_none(
        db_url: str, gov: Services, login_roles: LoginRoles) -> None:
    snapshots = {}
    for tenant in ("t1", "t2"):
        snapshots[tenant] = await support.activate_policy(gov, ALLOW_B, tenant=tenant)
        await support.store(gov.db, CHAIN, tenant=tenant)
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        conn.execute(PLAN, ["t1", snapshots["t1"], "allow"])  # its own tenant
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute(PLAN, ["t2", snapshots["t2"], "allow"])
        for statement in ("UPDATE warden.dispatch_plans SET reason = 'changed'",
                          "DELETE FROM warden.dispatch_plans"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(as_role(db_url, login_roles.worker_a), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM warden.dispatch_plans")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(PLAN, ["t2", snapshots["t2"], "allow"])
    assert await rows(gov.db, "SELECT tenant_id, reason FROM warden.dispatch_plans "
                              "WHERE created_by = 'mallory'") == [("t1", "x")]
