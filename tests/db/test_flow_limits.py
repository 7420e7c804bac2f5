"""Concurrency keys, rate limits, run priority and fair tenants, enforced by
warden.claim_jobs (docs/workflows.md#concurrency-and-rate-limits)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from engine.core.errors import InvalidDefinition, InvalidInput
from engine.governance import decisions
from engine.runs import lifecycle, views
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import gates as gates_q
from tests import support

pytestmark = pytest.mark.anyio

LIMITED = """
id: limited
name: limited
version: 1.0.0
steps:
  call:
    type: job
    topic: t.llm
    concurrency: {key: "${input.provider}", limit: 2}
"""

OTHER = """
id: other
name: other
version: 1.0.0
steps:
  call:
    type: job
    topic: t.llm2
    concurrency: {key: openai, limit: 2}
"""

RATED = """
id: rated
name: rated
version: 1.0.0
steps:
  call:
    type: job
    topic: t.rated
    rate_limit: {key: search, limit: 3, per_ms: 10000}
"""

PLAIN = """
id: plain
name: plain
version: 1.0.0
steps:
  work: {type: job, topic: t.fair}
"""


async def _running(db: Database, key: str) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM warden.jobs WHERE status = 'running' "
                                 "AND concurrency_key = %s", [key])
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_a_key_bounds_running_jobs_and_skips_to_other_keys(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, LIMITED)
    for _ in range(5):
        await support.start(db, "limited", {"provider": "openai"})
    late = await support.start(db, "limited", {"provider": "anthropic"})
    await support.settle(scheduler)
    first = await support.claim(db, ["t.llm"], n=10)
    # two of openai's five, and the anthropic job queued behind all of them
    assert sorted(j.run_id == late.run_id for j in first) == [False, False, True]
    assert await _running(db, "openai") == 2
    assert await support.claim(db, ["t.llm"], n=10) == []
    await support.complete(db, next(j for j in first if j.run_id != late.run_id))
    again = await support.claim(db, ["t.llm"], n=10)
    assert len(again) == 1 and await _running(db, "openai") == 2


async def test_a_key_is_shared_across_workflows_and_topics(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, LIMITED)
    await support.store(db, OTHER)
    for _ in range(3):
        await support.start(db, "limited", {"provider": "openai"})
        await support.start(db, "other")
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.llm", "t.llm2"], n=10)
    assert len(claimed) == 2
    assert await support.claim(db, ["t.llm2"], n=10) == []


async def test_concurrent_claimers_never_exceed_the_limit(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, LIMITED)
    for _ in range(40):
        await support.start(db, "limited", {"provider": "openai"})
    await support.settle(scheduler)
    for _ in range(10):
        batches = await asyncio.gather(*(support.claim(db, ["t.llm"], n=3, worker=f"w{i}")
                                         for i in range(12)))
        assert await _running(db, "openai") <= 2
        done = [job for batch in batches for job in batch]
        assert len(done) <= 2
        for job in done:
            await support.complete(db, job)


async def test_a_rate_limit_holds_over_its_window(db: Database, scheduler: Scheduler) -> None:
    await support.store(db, RATED)
    rated = [await support.start(db, "rated") for _ in range(10)]
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.rated"], n=10)
    assert len(claimed) == 3
    rated = [r for r in rated if r.run_id not in {j.run_id for j in claimed}]
    for job in claimed:
        await support.complete(db, job)
    # finished jobs still count: the window is about claims, not running work
    assert await support.claim(db, ["t.rated"], n=10) == []
    # the window frees its next claim exactly 10 s after the oldest of the last three
    async with db.connection() as conn:
        cur = await conn.execute("SELECT min(started_at) FROM warden.jobs WHERE rate_key = "
                                 "'search'")
        row = await cur.fetchone()
        assert row is not None
        waits = await gates_q.waiting_of_run(conn, "default", rated[-1].run_id)
    [wait] = waits.values()
    assert wait.rate_free_at == row[0] + timedelta(seconds=10)
    assert wait.claims_in_window == 3
    await support.advance_clock(db, 10.5)
    assert len(await support.claim(db, ["t.rated"], n=10)) == 3


async def test_run_priority_orders_jobs_before_step_priority(
        svc: Services, db: Database, scheduler: Scheduler) -> None:
    await support.store(db, PLAIN)
    low = await lifecycle.start(svc, tenant_id="default", workflow_id="plain", input={},
                                created_by="a", priority=9)
    high = await lifecycle.start(svc, tenant_id="default", workflow_id="plain", input={},
                                 created_by="a", priority=0)
    await support.settle(scheduler)
    first = await support.claim(db, ["t.fair"], n=1)
    assert [j.run_id for j in first] == [high.run.run_id]
    assert [j.run_id for j in await support.claim(db, ["t.fair"], n=1)] == [low.run.run_id]
    with pytest.raises(InvalidInput, match="priority"):
        await lifecycle.start(svc, tenant_id="default", workflow_id="plain", input={},
                              created_by="a", priority=10)


async def test_one_tenants_backlog_delays_another_by_at_most_one_batch(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, PLAIN, tenant="big")
    await support.store(db, PLAIN, tenant="small")
    run = await support.start(db, "plain", tenant="big")
    await support.settle(scheduler)
    # the big tenant's backlog: 20,000 pending attempts, all older than the small one's job
    async with db.connection() as conn:
        await conn.execute("""
            INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic,
                                     status, priority, available_at, policy_snapshot_hash)
            SELECT j.tenant_id, j.run_id::text || ':work@' || n, j.run_id, 'work', n, j.topic,
                   'pending', 0, now() - interval '1 hour', j.policy_snapshot_hash
              FROM warden.jobs j, generate_series(2, 20001) AS n
             WHERE j.run_id = %s""", [run.run_id])
    small = await support.start(db, "plain", tenant="small")
    await support.settle(scheduler)
    batch = await support.claim(db, ["t.fair"], n=10)
    assert small.run_id in {j.run_id for j in batch}
    assert len(batch) == 10


async def test_bad_limits_are_refused_with_their_field(db: Database) -> None:
    bad = LIMITED.replace("limit: 2", "limit: 0")
    with pytest.raises(InvalidDefinition, match=r"steps\.call\.concurrency\.limit"):
        await support.store(db, bad)
    bad = RATED.replace(", per_ms: 10000", "")
    with pytest.raises(InvalidDefinition, match=r"steps\.call\.rate_limit\.per_ms"):
        await support.store(db, bad)
    bad = LIMITED.replace("${input.provider}", "${steps.nope.output}")
    with pytest.raises(InvalidDefinition, match="unknown step 'nope'"):
        await support.store(db, bad)


async def test_a_waiting_job_says_which_gate_holds_it(db: Database, scheduler: Scheduler) -> None:
    await support.store(db, LIMITED)
    await support.store(db, RATED)
    runs = [await support.start(db, "limited", {"provider": "openai"}) for _ in range(3)]
    rated = [await support.start(db, "rated") for _ in range(4)]
    await support.settle(scheduler)
    assert len(await support.claim(db, ["t.llm"], n=10)) == 2
    assert len(await support.claim(db, ["t.rated"], n=10)) == 3
    shown = [views.run_detail(await support.detail(db, r.run_id))["steps"][0]["note"]
             for r in runs]
    assert "waiting for concurrency key openai (2/2 running)" in shown, shown
    rated_notes = [views.run_detail(await support.detail(db, r.run_id))["steps"][0]["note"]
                   for r in rated]
    assert any(n and n.startswith("rate limited until ") for n in rated_notes), rated_notes


POLICY_LIMITS = """
name: limits
default_decision: allow
rules:
  - name: prod-one-at-a-time
    match: {topics: ["t.fair"]}
    decision: allow_with_constraints
    reason: one at a time per tenant
    constraints: {max_concurrency: 1}
"""


async def test_a_policy_limit_gates_what_it_matches_and_is_recorded(
        svc: Services, db: Database, scheduler: Scheduler) -> None:
    stored = await decisions.store_bundle(db, tenant_id="default", source=POLICY_LIMITS,
                                          media_type=None, created_by="admin")
    await decisions.activate(db, tenant_id="default", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")
    await support.store(db, PLAIN)
    await support.store(db, LIMITED)
    runs = [await support.start(db, "plain") for _ in range(3)]
    await support.start(db, "limited", {"provider": "openai"})
    await support.settle(scheduler)
    # the rule's gate holds t.fair to one; the unmatched step keeps its own limit of 2
    assert len(await support.claim(db, ["t.fair"], n=10)) == 1
    assert len(await support.claim(db, ["t.llm"], n=10)) == 1
    assert await _running(db, "policy:prod-one-at-a-time") == 1
    dispatched = [e for e in await support.events(db, runs[0].run_id)
                  if e.kind == "policy.decision" and e.job_id is not None]
    assert dispatched[-1].data["constraints"] == {"max_concurrency": 1}


def _two_gates(workflow_id: str, topic: str, first: str, second: str) -> str:
    return f"""
id: {workflow_id}
name: {workflow_id}
version: 1.0.0
steps:
  call:
    type: job
    topic: {topic}
    concurrency: {{key: {first}, limit: 3}}
    rate_limit: {{key: {second}, limit: 1000, per_ms: 60000}}
"""


async def test_claimers_of_several_keys_never_deadlock_nor_exceed(
        db: Database, scheduler: Scheduler) -> None:
    """Keys met in every order by concurrent claimers of several topics: the gate locks
    must never form a cycle (a deadlock would raise here) and every limit holds."""
    await support.store(db, _two_gates("ab", "t.ab", "ka", "kb"))
    await support.store(db, _two_gates("ba", "t.ba", "kb", "ka"))
    for _ in range(15):
        await support.start(db, "ab")
        await support.start(db, "ba")
    await support.settle(scheduler)
    for _ in range(8):
        batches = await asyncio.gather(*(
            support.claim(db, topics, n=4, worker=f"w{i}")
            for i, topics in enumerate([["t.ab", "t.ba"], ["t.ba", "t.ab"]] * 5)))
        assert await _running(db, "ka") <= 3 and await _running(db, "kb") <= 3
        for job in [job for batch in batches for job in batch]:
            await support.complete(db, job)


FANNED = """
id: fanned
name: fanned
version: 1.0.0
steps:
  call:
    type: job
    topic: t.fan
    for_each: "${input.hosts}"
    max_parallel: 5
    input: {host: "${item}"}
    concurrency: {key: "${input.provider}", limit: 2}
"""


async def test_the_items_of_a_for_each_step_share_its_concurrency_key_and_run_priority(
        db: Database, scheduler: Scheduler) -> None:
    """Each item is a job of its own, gated like any job of the step: max_parallel lets
    five in flight, the key lets two run."""
    await support.store(db, FANNED)
    await support.start(db, "fanned", {"provider": "openai", "hosts": list("abcdef")},
                        priority=1)
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.fan"], n=10)
    assert len(claimed) == 2 and await _running(db, "openai") == 2
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*), min(priority), max(priority) FROM warden.jobs "
                                 "WHERE status = 'pending' AND concurrency_key = 'openai'")
        assert await cur.fetchone() == (3, 15, 15)  # run priority 1 x 10 + step priority 5
    await support.complete(db, claimed[0], {"ok": True})
    assert len(await support.claim(db, ["t.fan"], n=10)) == 1
