"""Claim floors (docs/design.md#claim-floors): a claim walks each lane of jobs_claimable
from its floor, not from the entries of the jobs claimed since, which no one may remove
while an old snapshot is open; every way a job becomes pending keeps its lane's floor at
or below it, and the advancer raises a floor only when no such job can be uncommitted.

tests/support.py's claim raises every floor before it claims, so the whole suite's claims
run from the tightest floors; this file is about the floors themselves."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from engine.daemons.serve import EngineConfig, run_engine
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

ONE = """
id: one
name: one
version: 1.0.0
steps:
  work: {type: job, topic: t.one, priority: 5}
"""

URGENT = """
id: urgent
name: urgent
version: 1.0.0
steps:
  work: {type: job, topic: t.one, priority: 0}
"""

CLAIM_ONE = "SELECT job_id FROM warden.claim_jobs(ARRAY['t.one'], 'w', 1, interval '30 s')"


async def _sql(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def _floor(db: Database, tenant: str = "default") -> tuple[Any, ...] | None:
    """(priority, available_at as text: 'infinity' for an empty lane) of a lane's floor."""
    rows = await _sql(db, "SELECT priority, available_at::text FROM warden.claim_floor("
                          "'t.one', %s, '', '')", tenant)
    return rows[0] if rows else None


async def _advance(db: Database) -> int:
    async with db.connection() as conn:
        return await jobs_q.advance_claim_marks(conn)


async def _pending(db: Database, n: int, scheduler: Scheduler, workflow: str = "one") -> None:
    """n pending jobs, each dispatched by a pass of its own: jobs of one transaction share
    their available_at, and a floor cannot rise past a tie."""
    for _ in range(n):
        await support.start(db, workflow)
        await support.settle(scheduler)


async def _claimable_reads(conn: psycopg.AsyncConnection[Any]) -> int:
    """Entries of jobs_claimable the server has handed out so far (this connection's
    own counts are flushed first)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    cur = await conn.execute("SELECT idx_tup_read FROM pg_stat_user_indexes "
                             "WHERE indexrelname = 'jobs_claimable'")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _claim_reads(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
    """(jobs claimed, entries of jobs_claimable read) by one claim of one job."""
    before = await _claimable_reads(conn)
    claimed = await (await conn.execute(CLAIM_ONE)).fetchall()
    return len(claimed), await _claimable_reads(conn) - before


async def test_under_an_old_snapshot_a_claim_starts_at_the_floor(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """The trap the floors exist for: while a snapshot older than 150 claims is open, the
    entries of those claims cannot be removed and lie in front of every live one. From a
    stale floor a claim reads them all; from a raised one, a handful."""
    await support.store(db, ONE)
    await _pending(db, 160, scheduler)
    await _advance(db)
    async with await psycopg.AsyncConnection.connect(db_url) as holder, \
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await holder.execute("SELECT count(*) FROM warden.jobs")  # the snapshot is taken
        for _ in range(150):
            assert len(await (await conn.execute(CLAIM_ONE)).fetchall()) == 1
        stale = await _claim_reads(conn)
        await _advance(db)
        raised = await _claim_reads(conn)
        await holder.rollback()
    assert stale[0] == 1 and stale[1] >= 150, stale
    assert raised[0] == 1 and raised[1] <= 10, raised


async def test_a_job_dispatched_below_a_raised_floor_lowers_it(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE)
    await support.store(db, URGENT)
    await _pending(db, 3, scheduler)
    await _advance(db)
    floor = await _floor(db)
    assert floor is not None and floor[0] == 55  # run priority 5 x 10 + step priority 5
    # an urgent run's job sorts before the floor: its dispatch must lower it, or no claim
    # would ever look where it is
    urgent = await support.start(db, "urgent", priority=0)
    await support.settle(scheduler)
    lowered = await _floor(db)
    assert lowered is not None and lowered[0] == 0
    [first] = await support.claim(db, ["t.one"], n=1)
    assert first.run_id == urgent.run_id
    assert len(await support.claim(db, ["t.one"], n=10)) == 3


async def test_the_advancer_leaves_a_lane_a_writer_holds(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """A transaction that made a job of the lane pending holds the lane's shared lock to
    its end: the advancer, which only tries the exclusive one, leaves that lane's floor
    where it is (the job may be below what the advancer can see) and moves it later."""
    await support.store(db, ONE)
    await _pending(db, 4, scheduler)
    await _advance(db)
    await support.claim(db, ["t.one"], n=2)
    async with await psycopg.AsyncConnection.connect(db_url) as writer:
        await writer.execute(
            "SELECT warden.lower_claim_mark('t.one', 'default', '', '', 99::smallint, now())")
        held = await _floor(db)
        assert await _advance(db) == 0
        assert await _floor(db) == held
        await writer.rollback()
    assert await _advance(db) == 1
    moved = await _floor(db)
    assert moved is not None and held is not None and moved[1] > held[1]


async def test_warden_serve_raises_the_floors(db: Database, svc: Services,
                                             scheduler: Scheduler) -> None:
    await support.store(db, ONE)
    await _pending(db, 3, scheduler)
    await _advance(db)
    before = await _floor(db)
    async with db.connection() as conn:  # a claim without raising first (not support's)
        assert len(await jobs_q.claim(conn, topics=["t.one"], worker="w", max_jobs=1,
                                      lease=timedelta(seconds=30))) == 1
    stop = asyncio.Event()
    engine = asyncio.create_task(run_engine(svc, EngineConfig(claim_floors_interval_s=0.05),
                                            stop))
    try:
        async def raised() -> bool | None:
            return True if await _floor(db) != before else None

        await support.wait_for(raised, timeout=10, what="the claim-floors loop")
    finally:
        stop.set()
        await engine


async def test_the_advancer_refuses_a_snapshot_older_than_its_lock(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
            await conn.execute("SELECT warden.advance_claim_marks()")


async def test_an_empty_lane_is_passed_over_then_forgotten(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE)
    await _pending(db, 2, scheduler)
    assert len(await support.claim(db, ["t.one"], n=10)) == 2
    await _advance(db)
    floor = await _floor(db)
    assert floor == (32767, "infinity")
    assert await support.claim(db, ["t.one"]) == []
    # ten minutes empty: the lane's rows go
    await _sql(db, "UPDATE warden.claim_marks SET marked_at = now() - interval '11 minutes'")
    await _advance(db)
    assert await _floor(db) is None
    assert await _sql(db, "SELECT count(*) FROM warden.claim_marks") == [(0,)]
    # and the next job marks it again
    run = await support.start(db, "one")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.one"])
    assert job.run_id == run.run_id


async def test_lanes_of_other_tenants_and_keys_keep_their_own_floors(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE)
    await support.store(db, ONE, tenant="acme")
    for tenant in ("default", "acme", "default", "acme"):
        await support.start(db, "one", tenant=tenant)
    await support.settle(scheduler)
    claimed = await support.claim(db, ["t.one"], n=1)
    assert len(claimed) == 1
    await _advance(db)
    # fair tenants: each tenant's lane is found from its own floor
    rest = await support.claim(db, ["t.one"], n=10)
    assert len(rest) == 3
    assert {j.tenant_id for j in rest} == {"default", "acme"}


async def test_concurrent_dispatches_and_advances_strand_no_job(
        db: Database, scheduler: Scheduler) -> None:
    """Starts of two priorities (the urgent ones always below the floor), the scheduler,
    claims and the advancer all at once: every job is claimed in the end, none is left
    pending below a floor."""
    await support.store(db, ONE)
    await support.store(db, URGENT)
    done = asyncio.Event()
    claimed: set[str] = set()

    async def starter(i: int) -> None:
        for n in range(15):
            await support.start(db, "urgent" if (i + n) % 3 == 0 else "one",
                                priority=(i + n) % 10)
            await asyncio.sleep(0)

    async def schedule() -> None:
        while not done.is_set():
            await scheduler.run_once()
            await asyncio.sleep(0.002)

    async def advance() -> None:
        while not done.is_set():
            await _advance(db)
            await asyncio.sleep(0)

    async def claim() -> None:
        while not done.is_set():
            async with db.connection() as conn:
                jobs = await jobs_q.claim(conn, topics=["t.one"], worker="w", max_jobs=3,
                                          lease=timedelta(seconds=30))
            claimed.update(j.job_id for j in jobs)
            await asyncio.sleep(0.001)

    background = [asyncio.create_task(f()) for f in (schedule, advance, claim)]
    await asyncio.gather(*(starter(i) for i in range(4)))
    await support.settle(scheduler)
    await asyncio.sleep(0.2)
    done.set()
    await asyncio.gather(*background)
    claimed.update(j.job_id for j in await support.claim(db, ["t.one"], n=100))
    assert len(claimed) == 60
    assert await _sql(db, "SELECT count(*) FROM warden.jobs WHERE status = 'pending'") \
        == [(0,)]


async def test_only_the_owner_reads_or_writes_the_marks(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    await support.store(db, ONE)
    await _pending(db, 1, scheduler)
    engine = as_role(db_url, login_roles.engine)
    worker = as_role(db_url, login_roles.worker_a)
    auditor = as_role(db_url, login_roles.auditor)
    for url in (engine, worker, auditor):
        for statement in (
                "SELECT * FROM warden.claim_marks",
                "INSERT INTO warden.claim_marks (topic, tenant_id, concurrency_key, rate_key,"
                " advance, priority, available_at) VALUES ('t.one', 'default', '', '', true,"
                " 0, 'infinity')",
                "SELECT warden.lower_claim_mark('t.one', 'default', '', '', 0::smallint,"
                " now())",
                "SELECT * FROM warden.claim_floor('t.one', 'default', '', '')"):
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await conn.execute(statement)
    for url in (worker, auditor):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT warden.advance_claim_marks()")


async def test_an_engine_session_raises_the_floors_of_its_own_tenant_only(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    """As the reaper reaps: `warden serve` (scope '*') raises every tenant's floors, a
    session scoped to one tenant that tenant's, and one with no scope none; the count it
    answers says nothing of other tenants either."""
    for tenant in ("default", "acme"):
        await support.store(db, ONE, tenant=tenant)
    for tenant in ("default", "acme", "default", "acme"):
        await support.start(db, "one", tenant=tenant)
        await support.settle(scheduler)
    assert len(await support.claim(db, ["t.one"], n=2)) == 2  # one of each tenant
    floors = {t: await _floor(db, t) for t in ("default", "acme")}

    async def advance(scope: str | None) -> int:
        async with await psycopg.AsyncConnection.connect(
                as_role(db_url, login_roles.engine), autocommit=True) as conn:
            if scope is not None:
                await conn.execute("SELECT set_config('warden.tenant', %s, false)", [scope])
            row = await (await conn.execute("SELECT warden.advance_claim_marks()")).fetchone()
            assert row is not None
            return int(row[0])

    assert await advance(None) == 0
    assert {t: await _floor(db, t) for t in floors} == floors
    assert await advance("acme") == 1
    assert await _floor(db, "default") == floors["default"]
    assert await _floor(db, "acme") != floors["acme"]
    assert await advance("*") == 1  # default's; acme's is where it belongs
    assert await _floor(db, "default") != floors["default"]
