"""Lookbacks (docs/design.md#lookbacks): the reaper and the observer of ends look back a
few seconds per pass, so an old snapshot's leftovers further back cost them nothing; a
full look still finds what the windows passed over."""

from __future__ import annotations

import psycopg
import pytest

from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
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
