"""Dispatch in the completion (docs/design.md#dispatch-in-the-completion): a worker's
completion dispatches the steps it made ready where a dispatch plan allows it, writing
what the scheduler's dispatch gate would; everything else stays the scheduler's."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio
import psycopg
import pytest
from psycopg.types.json import Jsonb

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.governance import approvals, decisions
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


# ---------------------------------------------------------------- drift

DRIFTS = [
    # the snapshot activated while b waits for a worker, and what becomes of b: the
    # decision, its job, its step, the run, and the events of the pass that judges it again
    pytest.param("""default_decision: deny
rules:
  - name: still-the-chain
    match: {topics: ["t.*"]}
    decision: allow
    reason: another snapshot, the same answer
""", ("still-the-chain", "allow"), JobStatus.PENDING, StepStatus.RUNNING, RunStatus.RUNNING,
        ["policy.decision", "job.dispatched"], id="allow"),
    pytest.param("""default_decision: allow
rules:
  - name: slow
    match: {topics: [t.b]}
    decision: allow_with_constraints
    reason: b is slow
    constraints: {timeout_ms: 5000, region: eu}
""", ("slow", "allow_with_constraints"), JobStatus.PENDING, StepStatus.RUNNING,
        RunStatus.RUNNING, ["policy.decision", "job.dispatched"], id="allow_with_constraints"),
    pytest.param("""default_decision: allow
rules:
  - name: ask
    match: {topics: [t.b]}
    decision: require_approval
    reason: b needs a human
""", ("ask", "require_approval"), JobStatus.BLOCKED, StepStatus.WAITING, RunStatus.WAITING,
        ["policy.decision", "approval.requested", "run.waiting"], id="require_approval"),
    pytest.param("""default_decision: allow
rules:
  - name: no-b
    match: {topics: [t.b]}
    decision: deny
    reason: b is off
""", ("no-b", "deny"), JobStatus.DENIED, StepStatus.DENIED, RunStatus.DENIED,
        ["policy.decision", "step.skipped", "run.denied"], id="deny"),
]

# what differs from run to run by construction: ids, hashes over the run id, times
PER_RUN = {"decision_id", "approval_id", "job_hash", "available_at", "expires_at"}


async def fate_of_b(db: Database, run_id: UUID, since: int) -> dict[str, Any]:
    """What a run's b came to (and its run's events from ``since`` on), without what
    differs from run to run by construction."""
    return {
        "job": (await rows(db, "SELECT status, policy_snapshot_hash, constraints, timeout_ms, "
                               "error - 'decision_id', finished_at IS NOT NULL, input, "
                               "upstream, priority, attempt FROM warden.jobs "
                               "WHERE run_id = %s AND step_id = 'b'", run_id)),
        "steps": await rows(db, "SELECT step_id, status, attempts FROM warden.steps "
                                "WHERE run_id = %s ORDER BY step_id", run_id),
        "run": await rows(db, "SELECT status FROM warden.runs WHERE run_id = %s", run_id),
        "decisions": await rows(db, "SELECT snapshot_hash, rule, decision, reason, "
                                    "split_part(job_id, ':', 2) FROM warden.policy_decisions "
                                    "WHERE run_id = %s AND step_id = 'b' "
                                    "AND stage = 'dispatch' ORDER BY decision_id", run_id),
        "approvals": await rows(db, "SELECT kind, status, policy_snapshot_hash, "
                                    "split_part(job_id, ':', 2) FROM warden.approvals "
                                    "WHERE run_id = %s", run_id),
        "events": [(e.kind, e.step_id, e.actor, e.job_id and e.job_id.split(":")[1],
                    {k: v for k, v in e.data.items() if k not in PER_RUN})
                   for e in (await support.events(db, run_id))[since:]],
    }


@pytest.mark.parametrize(("policy", "decided", "job_status", "step_status", "run_status",
                          "kinds"), DRIFTS)
async def test_a_job_dispatched_in_the_completion_drifts_as_a_schedulers_job_does(
        gov: Services, gov_scheduler: Scheduler, policy: str, decided: tuple[str, str],
        job_status: JobStatus, step_status: StepStatus, run_status: RunStatus,
        kinds: list[str]) -> None:
    snapshot = await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    # b dispatched by a's completion: no pass since, and the run not even flagged for one
    in_sql = await run_to_b(gov, gov_scheduler, {"x": 1})
    assert await rows(gov.db, "SELECT needs_scheduling FROM warden.runs WHERE run_id = %s",
                      in_sql) == [(False,)]
    job = await job_of(gov.db, in_sql, "b")
    assert job is not None and (job[0], job[6]) == (JobStatus.PENDING, snapshot)
    # its twin, dispatched by a scheduler pass (the plans gone, as the owner)
    await rows(gov.db, "DELETE FROM warden.dispatch_plans")
    by_pass = await run_to_b(gov, gov_scheduler, {"x": 1})
    assert await job_of(gov.db, by_pass, "b") is None
    await support.settle(gov_scheduler)
    assert await job_of(gov.db, by_pass, "b") == job
    since = {run_id: len(await support.events(gov.db, run_id)) for run_id in (in_sql, by_pass)}

    newer = await support.activate_policy(gov, policy)
    # the activation wakes the scheduler for both runs, and until a pass has judged b
    # again under the new snapshot neither job can be claimed
    flagged = "SELECT needs_scheduling FROM warden.runs WHERE run_id = %s"
    assert await rows(gov.db, flagged, in_sql) == await rows(gov.db, flagged, by_pass) == \
        [(True,)]
    assert await support.claim(gov.db, ["t.b"]) == []
    await support.settle(gov_scheduler)

    # the same fate either way, and the one the new snapshot says
    fate = await fate_of_b(gov.db, in_sql, since[in_sql])
    assert fate == await fate_of_b(gov.db, by_pass, since[by_pass])
    [(status, stamped, *_)] = fate["job"]
    assert (status, stamped) == (job_status, newer)
    assert [(s[0], s[1]) for s in fate["steps"]][1] == ("b", step_status)
    assert fate["run"] == [(run_status,)]
    assert [d[:3] for d in fate["decisions"]] == [(snapshot, "chain-steps", "allow"),
                                                  (newer, *decided)]
    assert [d[-1] for d in fate["decisions"]] == ["b@1", "b@1"]  # the same job, judged again
    assert [e[0] for e in fate["events"]] == kinds
    # the decision event names the new snapshot and the row that records it
    judged = (await support.events(gov.db, in_sql))[since[in_sql]]
    [(decision_id,)] = await rows(gov.db, "SELECT decision_id FROM warden.policy_decisions "
                                          "WHERE run_id = %s AND snapshot_hash = %s "
                                          "AND stage = 'dispatch'",
                                  in_sql, newer)
    assert (judged.kind, judged.job_id) == ("policy.decision", f"{in_sql}:b@1")
    assert (judged.data["snapshot_hash"], judged.data["decision_id"]) == (newer, decision_id)
    for run_id in (in_sql, by_pass):
        assert (await rows(gov.db, "SELECT warden.verify_timeline(%s)", run_id)) == [(True,)]

    # and from here on each goes exactly as far as the other
    if job_status is JobStatus.BLOCKED:
        for run_id in (in_sql, by_pass):
            # bound to the job as it stands (the one the completion wrote, for in_sql)
            [(approval_id, bound, job_input, upstream, constraints)] = await rows(
                gov.db, "SELECT a.approval_id, a.job_hash, j.input, j.upstream, j.constraints "
                        "FROM warden.approvals a JOIN warden.jobs j USING (tenant_id, job_id) "
                        "WHERE a.run_id = %s", run_id)
            assert bound == decisions.job_hash(
                tenant_id="default", run_id=run_id, step_id="b", topic="t.b",
                input=job_input, upstream=upstream, constraints=constraints)
            await approvals.decide(gov.db, tenant_id="default", approval_id=approval_id,
                                   approve=True, principal="bob", job_hash=bound)
        await support.settle(gov_scheduler)
    claimed = {j.run_id: j for j in await support.claim(gov.db, ["t.b"])}
    if job_status is JobStatus.DENIED:
        assert claimed == {}
    else:
        assert set(claimed) == {in_sql, by_pass}
        assert claimed[in_sql].constraints == claimed[by_pass].constraints == fate["job"][0][2]


# ---------------------------------------------------------------- the run lock's guard

COMPLETE = ("SELECT * FROM warden.complete_jobs(ARRAY[%s], ARRAY[%s]::uuid[], "
            "ARRAY[%s]::jsonb[])")


async def test_a_step_moved_without_its_run_lock_stops_the_completion_and_writes_nothing(
        db_url: str, gov: Services, gov_scheduler: Scheduler) -> None:
    await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    run = await support.start(gov, "chain", {"x": 1})
    await support.settle(gov_scheduler)
    [a] = await support.claim(gov.db, ["t.a"])
    assert ("b",) in await rows(gov.db, "SELECT step_id FROM warden.dispatch_plans")
    before = await support.events(gov.db, run.run_id)
    jobs = "SELECT job_id, status, lease_token, finished_at FROM warden.jobs WHERE run_id = %s"
    jobs_before = await rows(gov.db, jobs, run.run_id)
    decided = "SELECT count(*) FROM warden.policy_decisions WHERE run_id = %s"
    decided_before = await rows(gov.db, decided, run.run_id)
    flagged = "SELECT needs_scheduling, status FROM warden.runs WHERE run_id = %s"
    flagged_before = await rows(gov.db, flagged, run.run_id)
    # A writer that moves b without taking the run's lock first (nothing in the engine
    # does; the owner can), holding b's row until it commits. The completion reads b
    # pending, waits for b's row to dispatch it, and finds it moved.
    async with await psycopg.AsyncConnection.connect(db_url) as mover, \
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as worker:
        await mover.execute("UPDATE warden.steps SET status = 'skipped', "
                            "finished_at = warden.now() WHERE run_id = %s AND step_id = 'b'",
                            [run.run_id])
        mover_pid = mover.info.backend_pid
        refused: list[psycopg.Error] = []

        async def complete() -> None:
            try:
                await worker.execute(COMPLETE, [a.job_id, a.lease_token, Jsonb({"ok": 1})])
            except psycopg.Error as exc:
                refused.append(exc)

        async def blocked() -> bool:
            [(waits,)] = await rows(gov.db, "SELECT %s = ANY (pg_blocking_pids(%s))",
                                    mover_pid, worker.info.backend_pid)
            return bool(waits)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(complete)
            await support.wait_for(blocked, timeout=10, what="the completion to wait on b")
            await mover.commit()
    [error] = refused
    assert error.sqlstate == "WD500"
    assert "a step to dispatch changed under its run lock" in str(error)
    # the whole batch rolled back: a still running under its lease, no job for b, no
    # decision, no event, the run as it was; b as the other writer left it
    assert await rows(gov.db, jobs, run.run_id) == jobs_before
    assert [j[1] for j in jobs_before] == [JobStatus.RUNNING]
    assert await rows(gov.db, "SELECT step_id, status, attempts FROM warden.steps "
                              "WHERE run_id = %s ORDER BY step_id", run.run_id) == [
        ("a", StepStatus.RUNNING, 1), ("b", StepStatus.SKIPPED, 0), ("c", StepStatus.PENDING, 0)]
    assert await rows(gov.db, decided, run.run_id) == decided_before
    assert await rows(gov.db, flagged, run.run_id) == flagged_before
    assert await support.events(gov.db, run.run_id) == before
    assert (await rows(gov.db, "SELECT warden.verify_timeline(%s)", run.run_id)) == [(True,)]
    # nothing half-written stands in the way of the worker's retry, which has nothing of
    # b's to dispatch now
    assert await rows(gov.db, COMPLETE, a.job_id, a.lease_token, Jsonb({"ok": 1})) == [
        (a.job_id, "completed")]
    assert await job_of(gov.db, run.run_id, "b") is None


# ---------------------------------------------------------------- an activation in flight

DENY_B = """
default_decision: allow
rules:
  - name: no-b
    match: {topics: [t.b]}
    decision: deny
    reason: b is off
"""


async def test_an_activation_waits_for_a_completion_dispatching_under_the_old_snapshot(
        db_url: str, gov: Services, gov_scheduler: Scheduler) -> None:
    old = await support.activate_policy(gov, ALLOW_B)
    await support.store(gov.db, CHAIN)
    run = await support.start(gov, "chain", {"x": 1})
    await support.settle(gov_scheduler)
    [a] = await support.claim(gov.db, ["t.a"])
    newer: list[str] = []
    async with await psycopg.AsyncConnection.connect(db_url) as worker:
        # the completion dispatches b under the old snapshot and has not committed yet
        await worker.execute(COMPLETE, [a.job_id, a.lease_token, Jsonb({"ok": 1})])

        async def activate() -> None:
            newer.append(await support.activate_policy(gov, DENY_B))

        async def switched() -> bool:
            return await rows(gov.db, "SELECT snapshot_hash FROM warden.policy_active") != [
                (old,)]

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(activate)
            # the new pointer is committed (and its first flagging found no job of b), and
            # the activation has not returned: it waits for the completion
            await support.wait_for(switched, timeout=10, what="the activation to commit")
            await anyio.sleep(0.2)
            assert newer == []
            await worker.commit()
    assert len(newer) == 1
    job = await job_of(gov.db, run.run_id, "b")
    assert job is not None and (job[0], job[6]) == (JobStatus.PENDING, old)
    # flagged after the completion committed, so the scheduler judges b again: denied
    assert await rows(gov.db, "SELECT needs_scheduling FROM warden.runs WHERE run_id = %s",
                      run.run_id) == [(True,)]
    assert await support.claim(gov.db, ["t.b"]) == []
    await support.settle(gov_scheduler)
    job = await job_of(gov.db, run.run_id, "b")
    assert job is not None and (job[0], job[6]) == (JobStatus.DENIED, newer[0])
    assert await rows(gov.db, "SELECT status FROM warden.runs WHERE run_id = %s",
                      run.run_id) == [(RunStatus.DENIED,)]


async def test_a_session_holding_the_pointer_delays_an_activation_only_up_to_the_bound(
        db_url: str, gov: Services, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Any session that reads warden.policy_active in an open transaction (a worker's
    claim_jobs, say) is waited for by every activation of every tenant: at most
    READERS_WAIT_S, after which the activation flags without it and says so."""
    await support.activate_policy(gov, ALLOW_B)
    monkeypatch.setattr(decisions, "READERS_WAIT_S", 0.5)
    async with await psycopg.AsyncConnection.connect(db_url) as idle:
        await idle.execute("SELECT count(*) FROM warden.policy_active")  # and stays open
        began = anyio.current_time()
        newer = await support.activate_policy(gov, DENY_B, tenant="other")
        took = anyio.current_time() - began
    assert 0.5 <= took < 5
    assert await rows(gov.db, "SELECT snapshot_hash FROM warden.policy_active "
                              "WHERE tenant_id = 'other'") == [(newer,)]
    assert "still open after" in caplog.text
