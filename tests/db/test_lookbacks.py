"""Lookbacks (docs/design.md#lookbacks): the reaper and the observer of ends look back a
few seconds per pass, so an old snapshot's leftovers further back cost them nothing; a
full look still finds what the windows passed over."""

from __future__ import annotations

import pytest

from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from tests import support

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
    await support.complete(db, job)  # ends the run: end_unobserved
    await support.advance_clock(db, 30)
    async with db.connection() as conn:
        assert await runs_q.observe_ends(conn, 10, lookback_s=10) == []
        [ended] = await runs_q.observe_ends(conn, 10, lookback_s=None)
    assert ended.run_id == run.run_id
