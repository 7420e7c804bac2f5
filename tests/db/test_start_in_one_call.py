"""Starts in one call (docs/design.md#starts-in-one-call): where a start plan covers a
workflow version under the active snapshot, warden.start_planned_run starts the run, judges
it and dispatches its first steps in one call, writing what the long way (the start, then
its scheduler pass) writes; everything else starts the long way."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from engine.core.enums import JobStatus, RunStatus
from engine.core.errors import IdempotencyConflict, InvalidInput, NotFound, PolicyDenied
from engine.governance.policy import Verdict
from engine.runs import lifecycle
from engine.runs.services import Services, StartPlanMisses
from engine.scheduling.scheduler import Scheduler, with_start_dispatch
from engine.store import Database
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

FLOW = """
id: flow
name: flow
version: 1.0.0
timeout_ms: 600000
steps:
  fetch: {type: job, topic: t.fetch, priority: 2, timeout_ms: 30000}
  probe: {type: job, topic: t.probe, input: {mode: fixed}, retries: {max_attempts: 3}}
  plan:
    {type: job, topic: t.plan, depends_on: [fetch, probe], input: {from: "${steps.fetch.output}"}}
  ask: {type: approval, depends_on: [plan]}
  tell: {type: notify, depends_on: [ask], message: done}
"""

ALLOW = """
default_decision: deny
rules:
  - name: flow-topics
    match: {topics: ["t.*"]}
    decision: allow
    reason: the flow's own topics
"""

# the first rule that matches decides
REVIEW_PLAN = """
default_decision: deny
rules:
  - name: plan-needs-a-human
    match: {topics: [t.plan]}
    decision: require_approval
    reason: plans are reviewed
""" + ALLOW.split("rules:\n")[1]

NO_PLAN = """
default_decision: deny
rules:
  - name: no-plan
    match: {topics: [t.plan]}
    decision: deny
    reason: planning is off
""" + ALLOW.split("rules:\n")[1]


@pytest.fixture
def gov(db: Database) -> Services:
    """As `warden serve` composes it: deny by default, starts dispatch their first steps."""
    return with_start_dispatch(Services.create(db, policy_default=Verdict.DENY,
                                               approval_expires_ms=60_000))


@pytest.fixture
def in_one_call(monkeypatch: pytest.MonkeyPatch) -> list[UUID | None]:
    """What each start's call of warden.start_planned_run answered (None: no row)."""
    return support.spy_start_planned(monkeypatch)


async def rows(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def written(db: Database, run_id: UUID) -> dict[str, Any]:
    """Everything a start wrote for the run, with its ids and times made comparable."""
    [run] = await rows(db, """
        SELECT workflow_version, status, input, output, error, idempotency_key IS NOT NULL,
               request_digest, created_by, started_at = created_at, finished_at,
               deadline_at - created_at, needs_scheduling, timeline_seq, pins, depth,
               priority, EXISTS (SELECT 1 FROM warden.run_ends e WHERE e.run_id = r.run_id)
          FROM warden.runs r WHERE run_id = %s""", run_id)
    steps = await rows(db, """
        SELECT step_id, type, status, depends_on, topic, attempts, max_attempts, backoff_ms,
               max_backoff_ms, multiplier, jitter, timeout_ms, priority, retry_at, output,
               error, started_at IS NOT NULL, finished_at, wake_at
          FROM warden.steps WHERE run_id = %s ORDER BY step_id""", run_id)
    jobs = await rows(db, """
        SELECT split_part(job_id, ':', 2), step_id, attempt, topic, status, priority, input,
               upstream, constraints, checkpoint, timeout_ms, available_at = created_at,
               policy_snapshot_hash, traceparent, item_index, concurrency_key, rate_key
          FROM warden.jobs WHERE run_id = %s ORDER BY job_id""", run_id)
    decisions = await rows(db, """
        SELECT stage, snapshot_hash, rule, decision, reason, constraints, step_id,
               split_part(job_id, ':', 2)
          FROM warden.policy_decisions WHERE run_id = %s ORDER BY decision_id""", run_id)
    ids = {did: n for n, (did,) in enumerate(await rows(
        db, "SELECT decision_id FROM warden.policy_decisions WHERE run_id = %s "
            "ORDER BY decision_id", run_id))}
    events = []
    for e in await support.events(db, run_id):
        data = dict(e.data)
        if "decision_id" in data:  # the n-th decision of the run
            data["decision_id"] = ids[data["decision_id"]]
        if "available_at" in data:  # a time: its form differs between Python and SQL
            data["available_at"] = "<time>"
        if data.get("idempotency_key"):
            data["idempotency_key"] = "<key>"
        job = None if e.job_id is None else re.sub(r"^[0-9a-f-]{36}:", "", e.job_id)
        events.append((e.seq, e.kind, e.step_id, job, e.attempt, e.actor, data))
    [(verified,)] = await rows(db, "SELECT warden.verify_timeline(%s)", run_id)
    return {"run": run, "steps": steps, "jobs": jobs, "decisions": decisions,
            "events": events, "verified": verified}


async def test_a_start_in_one_call_writes_what_the_long_way_writes(
        gov: Services, in_one_call: list[UUID | None]) -> None:
    snapshot = await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    # no plan yet: the long way, whose pass writes the plan
    long_way = (await lifecycle.start(gov, tenant_id="default", workflow_id="flow",
                                      input={"ticket": 7}, created_by="alice",
                                      idempotency_key="k-1", priority=3)).run
    assert in_one_call == [None]
    assert await rows(gov.db, "SELECT workflow_version, snapshot_hash, jsonb_array_length(roots) "
                              "FROM warden.start_plans") == [("1.0.0", snapshot, 2)]
    one_call = (await lifecycle.start(gov, tenant_id="default", workflow_id="flow",
                                      input={"ticket": 7}, created_by="alice",
                                      idempotency_key="k-2", priority=3)).run
    assert in_one_call == [None, one_call.run_id]
    before, after = await written(gov.db, long_way.run_id), await written(gov.db, one_call.run_id)
    # the same digest: the keys differ, the requests do not
    assert before == after
    assert after["verified"] is True
    assert after["run"][1] is RunStatus.RUNNING and after["run"][11] is False
    assert [j[:7] for j in after["jobs"]] == [
        ("fetch@1", "fetch", 1, "t.fetch", JobStatus.PENDING, 32, {"ticket": 7}),
        ("probe@1", "probe", 1, "t.probe", JobStatus.PENDING, 35, {"mode": "fixed"})]
    assert [(e[1], e[2]) for e in after["events"]] == [
        ("run.created", None), ("policy.decision", "fetch"), ("policy.decision", "probe"),
        ("policy.decision", "plan"), ("run.started", None),
        ("step.ready", "fetch"), ("policy.decision", "fetch"), ("job.dispatched", "fetch"),
        ("step.ready", "probe"), ("policy.decision", "probe"), ("job.dispatched", "probe")]
    # and what the caller is handed is the run as it stands
    assert one_call.status is RunStatus.RUNNING and one_call.timeline_seq == 11


async def test_the_run_started_in_one_call_runs_to_its_end(
        gov: Services, in_one_call: list[UUID | None]) -> None:
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    await support.start(gov, "flow", {"n": 0})  # writes the plan
    run = await support.start(gov, "flow", {"n": 1})
    assert in_one_call[-1] == run.run_id
    scheduler = Scheduler(gov)
    jobs = await support.claim(gov.db, ["t.fetch", "t.probe"])
    mine = [j for j in jobs if j.run_id == run.run_id]
    assert sorted(j.step_id for j in mine) == ["fetch", "probe"]
    for job in mine:
        await support.complete(gov.db, job, {"got": job.step_id})
    await support.settle(scheduler)
    [plan] = [j for j in await support.claim(gov.db, ["t.plan"]) if j.run_id == run.run_id]
    assert plan.input == {"from": {"got": "fetch"}}  # a template: the scheduler rendered it
    await support.complete(gov.db, plan, {})
    await support.settle(scheduler)
    detail = await support.detail(gov, run.run_id)
    assert detail.run.status is RunStatus.WAITING  # on the approval
    assert (await rows(gov.db, "SELECT warden.verify_timeline(%s)", run.run_id)) == [(True,)]


async def test_a_key_replays_or_refuses_in_one_call_and_writes_nothing(
        gov: Services, in_one_call: list[UUID | None]) -> None:
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    await support.start(gov, "flow", {})  # writes the plan
    first = await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={"a": 1},
                                  created_by="alice", idempotency_key="same")
    assert not first.replayed and in_one_call[-1] == first.run.run_id
    counts = "SELECT (SELECT count(*) FROM warden.runs), (SELECT count(*) FROM warden.timeline)," \
             " (SELECT count(*) FROM warden.policy_decisions), (SELECT count(*) FROM warden.jobs)"
    before = await rows(gov.db, counts)
    again = await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={"a": 1},
                                  created_by="bob", idempotency_key="same")
    assert again.replayed and again.run.run_id == first.run.run_id
    assert in_one_call[-1] == first.run.run_id  # answered by the call, not the long way
    with pytest.raises(IdempotencyConflict, match="same"):
        await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={"a": 2},
                              created_by="bob", idempotency_key="same")
    assert await rows(gov.db, counts) == before


async def test_bad_input_gets_the_long_ways_error(gov: Services) -> None:
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    await support.start(gov, "flow", {})  # writes the plan
    with pytest.raises(InvalidInput, match="input"):
        await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input=[1],
                              created_by="alice")
    with pytest.raises(InvalidInput, match="priority"):
        await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={},
                              created_by="alice", priority=12)
    with pytest.raises(NotFound, match=r"version 9\.9\.9"):
        await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={},
                              created_by="alice", version="9.9.9")


@pytest.mark.parametrize(("workflow", "policy"), [
    # a root approval is the scheduler's
    (FLOW.replace("fetch: {type: job, topic: t.fetch, priority: 2, timeout_ms: 30000}",
                  "fetch: {type: approval}"), ALLOW),
    # a root with a template, a condition, a gate
    (FLOW.replace("input: {mode: fixed}", 'input: {x: "${input.x}"}'), ALLOW),
    (FLOW.replace("input: {mode: fixed}", 'when: "input.go == true"'), ALLOW),
    (FLOW.replace("input: {mode: fixed}", "concurrency: {key: k, limit: 1}"), ALLOW),
    # a later step asks for approval, or could be denied by its input, at submit
    (FLOW, REVIEW_PLAN),
    (FLOW, """default_decision: allow
rules:
  - name: big
    match: {input: ["input.size > 100"]}
    decision: deny
    reason: too big
"""),
])
async def test_what_a_plan_does_not_cover_starts_the_long_way(
        gov: Services, in_one_call: list[UUID | None], workflow: str, policy: str) -> None:
    await support.activate_policy(gov, policy)
    await support.store(gov.db, workflow)
    for n in range(3):
        run = await support.start(gov, "flow", {"x": n, "go": True, "size": 1})
        assert run.status in (RunStatus.RUNNING, RunStatus.WAITING)
    assert await rows(gov.db, "SELECT count(*) FROM warden.start_plans") == [(0,)]
    # asked twice: before the first start's pass wrote the version's plans (none of them
    # a start plan), and once after; then the miss is remembered for a while
    assert in_one_call == [None, None]


async def test_no_snapshot_no_plan(db: Database, in_one_call: list[UUID | None]) -> None:
    # the configured default lives in each process: SQL cannot apply it
    svc = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    await support.store(db, FLOW)
    for _ in range(3):
        await support.start(svc, "flow", {})
    assert await rows(db, "SELECT count(*) FROM warden.start_plans") == [(0,)]
    assert in_one_call == [None]  # then remembered: no snapshot, no plan written


async def test_a_plan_is_for_its_version_and_its_snapshot(
        gov: Services, in_one_call: list[UUID | None]) -> None:
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    await support.start(gov, "flow", {})  # writes the plan of 1.0.0
    # a newer version: the newest is started, the long way (and gets its own plan)
    await support.store(gov.db, FLOW.replace("version: 1.0.0", "version: 1.1.0"))
    newer = await support.start(gov, "flow", {})
    assert newer.workflow_version == "1.1.0" and in_one_call[-1] is None
    pinned = await lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={},
                                   created_by="alice", version="1.0.0")
    assert pinned.run.workflow_version == "1.0.0" and in_one_call[-1] == pinned.run.run_id
    # a new snapshot denies a later step at submit: the old snapshot's plan is not applied
    newer_policy = await support.activate_policy(gov, NO_PLAN)
    with pytest.raises(PolicyDenied, match="plan"):
        await support.start(gov, "flow", {})
    assert in_one_call[-1] is None
    assert await rows(gov.db, "SELECT count(*) FROM warden.start_plans "
                              "WHERE snapshot_hash = %s", newer_policy) == [(0,)]


# ---------------------------------------------------------------- who may start or plan

CALL = ("SELECT run_id FROM warden.start_planned_run(%s, 'flow', NULL, %s, '{}', NULL, 'd', "
        "5::smallint, 'mallory', NULL)")


async def test_an_engine_session_starts_in_one_call_for_its_tenants_only(
        db_url: str, gov: Services, login_roles: LoginRoles) -> None:
    for tenant in ("t1", "t2"):
        await support.activate_policy(gov, ALLOW, tenant=tenant)
        await support.store(gov.db, FLOW, tenant=tenant)
        await support.start(gov, "flow", {}, tenant=tenant)  # writes each tenant's plan
    assert await rows(gov.db, "SELECT count(*) FROM warden.start_plans") == [(2,)]
    runs = "SELECT count(*) FROM warden.runs"
    before = await rows(gov.db, runs)
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        assert conn.execute(CALL, ["t1", uuid4()]).fetchall() != []
        # another tenant's plan is out of sight: nothing started, nothing written
        assert conn.execute(CALL, ["t2", uuid4()]).fetchall() == []
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO warden.start_plans (tenant_id, workflow_id, "
                         "workflow_version, snapshot_hash, steps, submits, roots, created_by) "
                         "SELECT 't2', workflow_id, workflow_version, snapshot_hash, steps, "
                         "submits, roots, 'mallory' FROM warden.start_plans")
        for statement in ("UPDATE warden.start_plans SET roots = '[]'",
                          "DELETE FROM warden.start_plans"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    for role in (login_roles.worker_a, login_roles.auditor):
        with (psycopg.connect(as_role(db_url, role), autocommit=True) as conn,
              pytest.raises(psycopg.errors.InsufficientPrivilege)):
            conn.execute(CALL, ["t1", uuid4()])
    assert await rows(gov.db, runs) == [(before[0][0] + 1,)]


async def test_a_plan_holds_only_allowed_roots(gov: Services) -> None:
    snapshot = await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    with pytest.raises(psycopg.errors.CheckViolation, match="start_plans_roots_array"):
        await rows(gov.db, "INSERT INTO warden.start_plans (tenant_id, workflow_id, "
                           "workflow_version, snapshot_hash, steps, submits, roots, created_by)"
                           " VALUES ('default', 'flow', '1.0.0', %s, '[]', '[]', '[]', 'x')",
                   snapshot)


async def test_an_event_started_run_names_its_event_either_way(
        gov: Services, in_one_call: list[UUID | None]) -> None:
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    event = {"event_id": str(uuid4()), "name": "ticket.opened", "key": "T-7"}
    created = []
    for n in range(2):  # the long way (writes the plan), then in one call
        started = await lifecycle.start(gov, tenant_id="default", workflow_id="flow",
                                        input={"n": n}, created_by="event:ticket.opened",
                                        idempotency_key=f"event-{n}", started_by_event=event)
        first, *_ = await support.events(gov.db, started.run.run_id)
        created.append((first.kind, first.actor, first.data))
    assert in_one_call == [None, started.run.run_id]
    assert created[0] == ("run.created", "event:ticket.opened", {
        "workflow_id": "flow", "version": "1.0.0", "idempotency_key": "event-0",
        "started_by_event": event})
    assert created[1] == (created[0][0], created[0][1],
                          {**created[0][2], "idempotency_key": "event-1"})


async def test_a_plan_another_process_wrote_is_found_once_the_miss_is_old(
        db: Database, in_one_call: list[UUID | None]) -> None:
    await support.store(db, FLOW)
    here = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    elsewhere = with_start_dispatch(Services.create(db, policy_default=Verdict.ALLOW))
    await support.start(here, "flow", {})  # no snapshot: a miss, and no plan to write
    await support.activate_policy(db, ALLOW)
    await support.start(elsewhere, "flow", {})  # the other process writes the plan
    assert await rows(db, "SELECT count(*) FROM warden.start_plans") == [(1,)]
    assert in_one_call == [None, None]
    later = time.monotonic() + StartPlanMisses.TTL_S + 1
    here.start_plan_misses.clock = lambda: later
    run = await support.start(here, "flow", {})
    assert in_one_call == [None, None, run.run_id]


async def test_concurrent_starts_with_one_key_make_one_run(
        gov: Services, in_one_call: list[UUID | None]) -> None:
    """runs_idempotency arbitrates in one call as on the long way: the starts that wait on
    the first one's key are answered with its run, and write nothing."""
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    await support.start(gov, "flow", {})  # writes the plan
    starts = [lifecycle.start(gov, tenant_id="default", workflow_id="flow", input={"a": 1},
                              created_by=f"caller-{n}", idempotency_key="one-key")
              for n in range(8)]
    results = await asyncio.gather(*starts)
    assert len({r.run.run_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 7
    assert in_one_call[1:] == [results[0].run.run_id] * 8  # every one answered in one call
    [(runs, jobs, decisions)] = await rows(gov.db, """
        SELECT (SELECT count(*) FROM warden.runs WHERE idempotency_key = 'one-key'),
               (SELECT count(*) FROM warden.jobs j JOIN warden.runs r USING (tenant_id, run_id)
                 WHERE r.idempotency_key = 'one-key'),
               (SELECT count(*) FROM warden.policy_decisions d
                  JOIN warden.runs r USING (tenant_id, run_id)
                 WHERE r.idempotency_key = 'one-key')""")
    assert (runs, jobs, decisions) == (1, 2, 5)  # 3 submit, 2 dispatch: written once


async def test_an_unscoped_engine_session_starts_nothing(
        db_url: str, gov: Services, login_roles: LoginRoles) -> None:
    await support.activate_policy(gov, ALLOW)
    await support.store(gov.db, FLOW)
    await support.start(gov, "flow", {})  # writes the plan
    before = await rows(gov.db, "SELECT count(*) FROM warden.runs")
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        # no warden.tenant at all, and an empty one: row-level security shows nothing
        assert conn.execute(CALL, ["default", uuid4()]).fetchall() == []
        conn.execute("SELECT set_config('warden.tenant', '', false)")
        assert conn.execute(CALL, ["default", uuid4()]).fetchall() == []
    assert await rows(gov.db, "SELECT count(*) FROM warden.runs") == before
