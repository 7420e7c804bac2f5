"""Lookbacks (docs/design.md#lookbacks): the reaper, the observer of ends and the
reconciler's report of unclaimed jobs look back a few seconds per pass, so an old
snapshot's leftovers further back cost them nothing; a full look still finds what the
windows passed over."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from engine.daemons.reconciler import Reconciler
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store import reconciler as reconciler_q
from engine.store import runs as runs_q
from engine.store.connection import connect
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

ONE = """
id: one
name: one
version: 1.0.0
steps:
  work: {type: job, topic: t.one}
"""


async def test_a_lease_that_expired_before_the_lookback_waits_for_the_full_look(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE)
    await support.start(db, "one")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.one"], lease_s=5)
    await support.advance_clock(db, 30)  # expired 25 s ago
    async with db.connection() as conn:
        assert await jobs_q.reap_expired(conn, 10, lookback_s=10) == 0
        assert await jobs_q.reap_expired(conn, 10, lookback_s=60) == 1
    async with db.connection() as conn:
        found = await jobs_q.get(conn, "default", job.job_id)
    assert found is not None and found.status == "timed_out"


async def test_an_end_before_the_lookback_waits_for_the_full_look(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, ONE)
    run = await support.start(db, "one")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.one"])
    await support.complete(db, job)  # ends the run: its end in warden.run_ends
    await support.advance_clock(db, 30)
    async with db.connection() as conn:
        assert await runs_q.observe_ends(conn, 10, lookback_s=10) == []
        [ended] = await runs_q.observe_ends(conn, 10, lookback_s=None)
    assert ended.run_id == run.run_id


async def test_a_lookback_reaps_only_the_scoped_tenant_and_refuses_nonsense(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    """The new argument widens nothing: an engine session scoped to one tenant reaps that
    tenant's expired leases only, however far it looks back; a lookback of zero or less
    is refused, not read as 'look into the future'."""
    for tenant in ("default", "acme"):
        await support.store(db, ONE, tenant=tenant)
        await support.start(db, "one", tenant=tenant)
    await support.settle(scheduler)
    assert len(await support.claim(db, ["t.one"], lease_s=5)) == 2
    await support.advance_clock(db, 30)
    async with await psycopg.AsyncConnection.connect(
            as_role(db_url, login_roles.engine), autocommit=True) as conn:
        await conn.execute("SELECT set_config('warden.tenant', 'acme', false)")
        for bad in ("0 s", "-1 day"):
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="lookback"):
                await conn.execute("SELECT warden.reap_expired_jobs(10, %s::interval)", [bad])
        row = await (await conn.execute(
            "SELECT warden.reap_expired_jobs(10, interval '1 hour')")).fetchone()
        assert row == (1,)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT tenant_id, status::text FROM warden.jobs "
                                 "ORDER BY tenant_id")
        assert await cur.fetchall() == [("acme", "timed_out"), ("default", "running")]


async def test_a_job_unclaimed_before_the_lookback_waits_for_the_full_look(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    """The report of a job past the dispatch timeout looks back 30 s behind the timeout
    (three passes of serve's default 10 s); the reconciler's first pass, and one in five
    minutes, looks all the way."""
    await support.store(db, ONE)
    await support.start(db, "one")
    await support.settle(scheduler)
    await support.advance_clock(db, 60)  # passed the timeout (1 s) 59 s ago
    timeout = timedelta(seconds=1)
    async with db.transaction() as conn:
        assert await reconciler_q.unclaimed_jobs(conn, timeout=timeout, limit=10,
                                                 lookback_s=30) == []
    reconciler = Reconciler(svc, dispatch_timeout=timeout, grace=timedelta(0))
    assert (await reconciler.run_once(sweep=False)).unclaimed == 1  # the first: all the way
    [job] = await support.claim(db, ["t.one"])  # reported, and still claimable
    assert job.attempt == 1


async def test_the_unclaimed_window_spans_three_of_the_reconcilers_passes(
        db: Database, svc: Services, scheduler: Scheduler) -> None:
    """The window follows the interval the reconciler runs at: a job that passed the
    timeout 59 s ago is inside three 30 s passes' window, outside three 10 s passes'."""
    await support.store(db, ONE)
    timeout = timedelta(seconds=1)
    reconcilers = {every: Reconciler(svc, dispatch_timeout=timeout, grace=timedelta(0),
                                     pass_interval=timedelta(seconds=every))
                   for every in (10, 30)}
    for r in reconcilers.values():  # the first pass of each looks all the way
        assert (await r.run_once(sweep=False)).unclaimed == 0
    await support.start(db, "one")
    await support.settle(scheduler)
    await support.advance_clock(db, 60)
    assert (await reconcilers[10].run_once(sweep=False)).unclaimed == 0
    assert (await reconcilers[30].run_once(sweep=False)).unclaimed == 1


async def test_an_old_snapshots_claimed_jobs_cost_the_unclaimed_report_nothing(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    """While a snapshot older than them is open, the index entries of jobs claimed since
    stay, all behind the live ones: a look 30 s back returns none of them, where every
    pass did (and read each one's row, to find it dead)."""
    wide = "\n".join(f"  s{i:02d}: {{type: job, topic: t.wide}}" for i in range(50))
    await support.store(db, f"id: wide\nname: wide\nversion: 1.0.0\nsteps:\n{wide}\n")
    holder = await connect(db_url, autocommit=False)
    try:
        await holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await holder.execute("SELECT count(*) FROM warden.jobs")  # the snapshot, held
        for _ in range(4):
            await support.start(db, "wide")
        await support.settle(scheduler)
        assert len(await support.claim(db, ["t.wide"], n=200)) == 200
        await support.advance_clock(db, 120)
        reads = []
        for lookback_s in (30.0, None):
            conn = await connect(db.url, autocommit=False)  # its own counts
            try:
                found = await reconciler_q.unclaimed_jobs(
                    conn, timeout=timedelta(seconds=1), limit=10, lookback_s=lookback_s)
                # entries returned by every index of warden.jobs, and rows by its scans
                cur = await conn.execute(
                    "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid)) FROM pg_class c "
                    "WHERE c.oid = 'warden.jobs'::regclass OR c.oid IN ("
                    " SELECT indexrelid FROM pg_index "
                    " WHERE indrelid = 'warden.jobs'::regclass)")
                row = await cur.fetchone()
                await conn.rollback()
            finally:
                await conn.close()
            assert found == [] and row is not None
            reads.append(row[0])
    finally:
        await holder.close()
    windowed, full = reads
    assert windowed < 10 <= 200 <= full, reads


async def test_the_unclaimed_report_walks_only_its_window_of_its_own_index(
        db: Database, db_url: str) -> None:
    """Through jobs_claimable (available_at its last column) the walk covered every entry,
    dead or alive, before the window's bounds could filter one; its own index by
    available_at starts and stops at the window."""
    plan = await support.generic_plan(db_url, "reconcile_unclaimed_jobs", {
        "timeout": "5 min", "lookback": "30 s", "limit": "100"})
    scan = next(line for line in plan.splitlines() if "jobs_unclaimed_by_available" in line)
    cond = plan.splitlines()[plan.splitlines().index(scan) + 1]
    assert "Index Cond" in cond and "available_at <" in cond and "available_at >=" in cond, plan
