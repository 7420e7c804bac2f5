"""Scheduling floors (docs/design.md#scheduling-floors): a scheduler pass takes flagged
runs from its floor in flagging order, so it never walks the index entries of the flags
cleared since, which no one may remove while an old snapshot is open; every flag draws
its place under the floor's shared lock, and the floor moves only while no flag can be
uncommitted."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from engine.scheduling.floor import SchedulingFloor
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import runs as runs_q
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

WAIT = """
id: wait
name: wait
version: 1.0.0
steps:
  work: {type: job, topic: t.wait}
"""


async def _sql(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall() if cur.description else []


async def _floor(db: Database, since: int = 0) -> int | None:
    async with db.connection() as conn:
        return await runs_q.scheduling_floor(conn, since)


async def _queue_reads(conn: psycopg.AsyncConnection[Any]) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    cur = await conn.execute("SELECT idx_tup_read FROM pg_stat_user_indexes "
                             "WHERE indexrelname = 'runs_to_schedule'")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _look(conn: psycopg.AsyncConnection[Any], floor: int) -> tuple[int, int]:
    """(runs a pass from ``floor`` would take, entries of runs_to_schedule it read). On
    the index, as on a table of real size: on a test's few hundred rows the planner
    would rather read the table."""
    before = await _queue_reads(conn)
    async with conn.transaction(force_rollback=True):
        await conn.execute("SET LOCAL enable_seqscan = off")
        taken = await runs_q.lock_for_scheduling(conn, 50, floor=floor)  # type: ignore[arg-type]
    return len(taken), await _queue_reads(conn) - before


async def test_under_an_old_snapshot_a_pass_starts_at_the_floor(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    await support.store(db, WAIT)
    async with await psycopg.AsyncConnection.connect(db_url) as holder, \
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await holder.execute("SELECT count(*) FROM warden.runs")  # the snapshot is taken
        # 150 runs flagged at start and cleared by their passes, behind the snapshot
        for _ in range(150):
            await support.start(db, "wait")
        await support.settle(scheduler)
        woken = await support.start(db, "wait")  # one flagged run, the newest
        floor = await _floor(db)
        assert floor is not None
        full, raised = await _look(conn, 0), await _look(conn, floor)
        await holder.rollback()
    assert full[0] == 1 and full[1] >= 150, full
    assert raised[0] == 1 and raised[1] <= 5, raised
    [row] = await _sql(db, "SELECT flag_seq FROM warden.runs WHERE run_id = %s", woken.run_id)
    assert row[0] == floor


async def test_every_flag_draws_a_place_at_or_above_the_floor(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, WAIT)
    run = await support.start(db, "wait")
    await support.settle(scheduler)
    floor = await _floor(db)
    assert floor is not None
    # nothing is flagged: the floor is past every number drawn
    assert await _sql(db, "SELECT count(*) FROM warden.runs WHERE flag_seq >= %s", floor) \
        == [(0,)]
    async with db.connection() as conn:
        await runs_q.wake(conn, run.tenant_id, run.run_id)
    [(seq,)] = await _sql(db, "SELECT flag_seq FROM warden.runs WHERE run_id = %s", run.run_id)
    assert seq >= floor
    assert await _floor(db, floor) == seq
    scheduler.floor.value = floor
    assert await scheduler.run_once() == 1


async def test_the_floor_waits_for_an_uncommitted_flag(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """A flag drawn but not committed holds the shared lock: the floor cannot be taken
    past it, so it is not taken at all until the flag commits."""
    await support.store(db, WAIT)
    run = await support.start(db, "wait")
    await support.settle(scheduler)
    before = await _floor(db)
    async with await psycopg.AsyncConnection.connect(db_url) as flagger:
        await flagger.execute("SELECT warden.wake_run(%s, %s)", [run.tenant_id, run.run_id])
        assert await _floor(db) is None  # busy: the scheduler keeps its floor
        await flagger.commit()
    assert await _floor(db) == before  # its flag drew `before`, the next number
    assert await scheduler.run_once() == 1


async def test_a_full_look_finds_a_run_below_the_floor(
        db: Database, scheduler: Scheduler) -> None:
    """A run inserted with a place of its inserter's choosing, below every floor, is
    still taken: every full_s a pass looks from 0."""
    await support.store(db, WAIT)
    run = await support.start(db, "wait")
    await support.settle(scheduler)
    floor = SchedulingFloor(db, refresh_s=0.0, full_s=3600.0)
    assert await floor.for_pass() == 0  # the first pass looks from 0
    assert await floor.for_pass() > 0
    async with db.connection() as conn:
        await runs_q.wake(conn, run.tenant_id, run.run_id)
    await _sql(db, "UPDATE warden.runs SET flag_seq = 0 WHERE run_id = %s", run.run_id)
    assert await floor.for_pass() > 0
    async with db.connection() as conn:
        assert await runs_q.lock_for_scheduling(conn, 10, floor=floor.value) == []
    floor.full.full_s = 0.0
    assert await floor.for_pass() == 0
    scheduler.floor = floor
    assert await scheduler.run_once() == 1


async def test_the_floor_refuses_a_snapshot_older_than_its_lock(db_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
            await conn.execute("SELECT warden.scheduling_floor(0)")


async def test_concurrent_flags_and_floors_leave_no_run_behind(
        db: Database, scheduler: Scheduler) -> None:
    """Starts and wakes from several tasks while the floor is raised before every pass:
    every run is taken by a pass in the end, none is left flagged below a floor."""
    await support.store(db, WAIT)
    scheduler.floor = SchedulingFloor(db, refresh_s=0.0, full_s=3600.0)
    done = asyncio.Event()
    started = []

    async def starter() -> None:
        for _ in range(12):
            run = await support.start(db, "wait")
            started.append(run)
            async with db.connection() as conn:
                await runs_q.wake(conn, run.tenant_id, run.run_id)
            await asyncio.sleep(0)

    async def schedule() -> None:
        while not done.is_set():
            await scheduler.run_once()
            await asyncio.sleep(0)

    background = [asyncio.create_task(schedule()) for _ in range(2)]
    await asyncio.gather(*(starter() for _ in range(4)))
    for _ in range(50):
        if await _sql(db, "SELECT count(*) FROM warden.runs WHERE needs_scheduling") \
                == [(0,)]:
            break
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*background)
    assert len(started) == 48
    assert await _sql(db, "SELECT count(*) FROM warden.runs WHERE needs_scheduling") \
        == [(0,)]
    assert await _sql(db, "SELECT count(*) FROM warden.jobs") == [(48,)]


async def test_who_may_ask_for_a_floor_or_move_a_place(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    await support.store(db, WAIT)
    run = await support.start(db, "wait")
    await support.settle(scheduler)
    engine = as_role(db_url, login_roles.engine)
    async with await psycopg.AsyncConnection.connect(engine, autocommit=True) as conn:
        await conn.execute("SELECT set_config('warden.tenant', '*', false)")
        await conn.execute("SELECT warden.scheduling_floor(0)")
        # the place is the trigger's to draw, not the engine's to set
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("UPDATE warden.runs SET flag_seq = 0 WHERE run_id = %s",
                               [run.run_id])
        # a flag the engine sets draws its place
        await conn.execute("UPDATE warden.runs SET needs_scheduling = true WHERE run_id = %s",
                           [run.run_id])
    [(seq,)] = await _sql(db, "SELECT flag_seq FROM warden.runs WHERE run_id = %s", run.run_id)
    assert seq is not None and seq > 1
    for role in (login_roles.worker_a, login_roles.auditor):
        async with await psycopg.AsyncConnection.connect(as_role(db_url, role),
                                                         autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute("SELECT warden.scheduling_floor(0)")
