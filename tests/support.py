"""Helpers shared by the database and end-to-end tests (no fakes: real engine calls)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar
from uuid import UUID

import psycopg
import pytest

from engine.definitions import workflows
from engine.governance import decisions
from engine.governance.policy import Verdict
from engine.runs import lifecycle
from engine.runs.lifecycle import RunDetail
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database, sqlfiles
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import timeline as timeline_q
from engine.store.records import ClaimedJob, RunRow, TimelineEvent

T = TypeVar("T")

SEED_WORKFLOW = """
id: incident-remediation
name: Incident remediation workflow
version: 1.0.0
steps:
  detect:   {type: job, topic: job.incident.detect}
  classify: {type: job, topic: job.incident.classify, depends_on: [detect]}
  patch_plan: {type: job, topic: job.incident.patch.plan, depends_on: [classify]}
  approval_gate: {type: approval, depends_on: [patch_plan]}
  apply_patch:
    type: job
    topic: job.incident.patch.apply
    depends_on: [approval_gate]
    retries: {max_attempts: 2, backoff_ms: 5000}
  notify: {type: notify, depends_on: [apply_patch]}
"""

SEED_TOPICS = ["job.incident.detect", "job.incident.classify", "job.incident.patch.plan",
               "job.incident.host.check", "job.incident.patch.apply"]


async def store(db: Database, source: str, tenant: str = "default") -> None:
    await workflows.store(db, tenant_id=tenant, source=source, media_type=None,
                          created_by="author")


def services(db: Database | Services) -> Services:
    """The given services, or allow-by-default ones: tests of the engine's mechanics are
    not about policy (tests/db/test_governance.py is)."""
    return db if isinstance(db, Services) else Services.create(db, policy_default=Verdict.ALLOW)


async def start(db: Database | Services, workflow_id: str, input: dict[str, Any] | None = None,
                *, by: str = "alice", key: str | None = None,
                tenant: str = "default", priority: int | None = None) -> RunRow:
    started = await lifecycle.start(services(db), tenant_id=tenant, workflow_id=workflow_id,
                               input=input or {}, created_by=by, idempotency_key=key,
                               priority=priority)
    return started.run


async def activate_policy(db: Database | Services, source: str,
                          tenant: str = "default") -> str:
    """Stores a policy bundle and makes it the tenant's active snapshot; its hash."""
    database = db.db if isinstance(db, Services) else db
    stored = await decisions.store_bundle(database, tenant_id=tenant, source=source,
                                          media_type=None, created_by="admin")
    await decisions.activate(database, tenant_id=tenant,
                             snapshot_hash=stored.row.snapshot_hash, activated_by="admin")
    return stored.row.snapshot_hash


async def settle(scheduler: Scheduler) -> None:
    """Runs scheduler passes until no run is flagged."""
    for _ in range(100):
        if await scheduler.run_once() == 0:
            return
    raise AssertionError("the scheduler never settled")


async def claim(db: Database, topics: list[str], *, n: int = 10, lease_s: float = 30,
                worker: str = "w1") -> list[ClaimedJob]:
    """Claims as a worker would, each time from claim floors just raised to every lane's
    first pending job (docs/design.md#claim-floors): the tightest floors a claim can meet,
    so every way a test makes a job pending must lower its lane's floor or the job is
    never claimed."""
    async with db.connection() as conn:
        await jobs_q.advance_claim_marks(conn)
        return await jobs_q.claim(conn, topics=topics, worker=worker, max_jobs=n,
                                  lease=timedelta(seconds=lease_s))


async def complete(db: Database, job: ClaimedJob, result: Any = None) -> None:
    async with db.connection() as conn:
        await jobs_q.complete(conn, job_id=job.job_id, lease_token=job.lease_token,
                              result=result if result is not None else {"ok": job.step_id})


async def fail(db: Database, job: ClaimedJob, *, retryable: bool = True) -> None:
    async with db.connection() as conn:
        await jobs_q.fail(conn, job_id=job.job_id, lease_token=job.lease_token,
                          error={"type": "Boom", "message": "test failure"}, retryable=retryable)


async def advance_clock(db: Database, seconds: float) -> None:
    """Moves the database clock (warden.now(), sql/functions/now.sql) forward: tests of
    leases, backoff, deadlines and expiry move time instead of sleeping."""
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO warden.clock (shift) VALUES (make_interval(secs => %s)) "
            "ON CONFLICT (one) DO UPDATE SET shift = warden.clock.shift + excluded.shift",
            [seconds])


async def detail(db: Database | Services, run_id: UUID) -> RunDetail:
    return await lifecycle.detail(services(db), None, run_id)


async def generic_plan(db_url: str, name: str, params: dict[str, str]) -> str:
    """The named statement's (sql/queries) generic plan, as the engine's cached one, with
    the parameters given (``params``: name to value, in order) and sequential scans off:
    the test tables are a page or two, where a scan of all of them is cheap and would
    hide the shape the planner picks on a large table."""
    query = sqlfiles.get(name).sql
    names = list(params)
    for i, key in enumerate(names, start=1):
        query = query.replace(f"%({key})s", f"${i}")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute("SET enable_seqscan = off")
        await conn.execute(f"PREPARE planned AS {query}")
        cur = psycopg.AsyncClientCursor(conn)
        await cur.execute("BEGIN")
        await cur.execute("EXPLAIN EXECUTE planned(" + ", ".join(["%s"] * len(names)) + ")",
                          [params[k] for k in names])
        plan = "\n".join(r[0] for r in await cur.fetchall())
        await cur.execute("ROLLBACK")
    return plan


async def end_unobserved(db: Database | Services, run_id: UUID) -> bool:
    """Whether a worker's completion ended the run and no serve has observed the end yet
    (its row in warden.run_ends)."""
    database = db.db if isinstance(db, Services) else db
    async with database.connection() as conn:
        cur = await conn.execute(
            "SELECT EXISTS (SELECT 1 FROM warden.run_ends WHERE run_id = %s)", [run_id])
        row = await cur.fetchone()
    return bool(row and row[0])


async def events(db: Database, run_id: UUID, tenant: str = "default") -> list[TimelineEvent]:
    async with db.connection() as conn:
        return await timeline_q.page(conn, tenant, run_id, after=0, limit=10_000)


async def kinds(db: Database, run_id: UUID) -> list[str]:
    return [e.kind for e in await events(db, run_id)]


async def wait_for(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0,
                   interval: float = 0.05, what: str = "condition") -> T:
    """Polls ``check`` until it returns something truthy, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def spy_start_planned(monkeypatch: pytest.MonkeyPatch) -> list[UUID | None]:
    """What each start's call of warden.start_planned_run answers from now on, in order
    (None: no row; docs/design.md#starts-in-one-call)."""
    answered: list[UUID | None] = []
    original = runs_q.start_planned

    async def spy(*args: Any, **kwargs: Any) -> Any:
        row = await original(*args, **kwargs)
        answered.append(None if row is None else row.run_id)
        return row

    monkeypatch.setattr(runs_q, "start_planned", spy)
    return answered
