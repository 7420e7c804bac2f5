"""Flow control with real processes: a concurrency key shared by two workflows under four
worker processes, and a cron tick met by two `warden serve` processes."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

import pytest

from engine.core.enums import RunStatus
from engine.store import Database
from tests import support
from tests.e2e.processes import Processes

pytestmark = pytest.mark.anyio


def _shared(workflow_id: str, topic: str) -> str:
    return f"""
id: {workflow_id}
name: {workflow_id}
version: 1.0.0
steps:
  call:
    type: job
    topic: {topic}
    concurrency: {{key: shared-provider, limit: 2}}
"""


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one instant; an end at the same instant as a start
    closes first (the slot was free when the next claim counted)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals],
                    key=lambda p: (p[0], p[1]))
    most = now = 0
    for _, step in points:
        now += step
        most = max(most, now)
    return most


async def test_a_shared_key_is_never_exceeded_by_four_workers(
        db: Database, procs: Processes, marks: Path) -> None:
    await support.store(db, _shared("first", "t.shared.a"))
    await support.store(db, _shared("second", "t.shared.b"))
    procs.serve()
    for _ in range(4):
        procs.worker("t.shared.a", "t.shared.b", concurrency=8)
    behave = {"behave": {"call": {"sleep_s": 0.15}}, "marks": str(marks)}
    runs = [await support.start(db, workflow, behave)
            for _ in range(10) for workflow in ("first", "second")]

    async def finished() -> bool:
        statuses = [(await support.detail(db, r.run_id)).run.status for r in runs]
        failed = [s for s in statuses if s.is_final and s is not RunStatus.SUCCEEDED]
        assert not failed, statuses
        return all(s is RunStatus.SUCCEEDED for s in statuses)

    await support.wait_for(finished, timeout=120, interval=0.5, what="every run to succeed")
    intervals: list[tuple[datetime, datetime]] = []
    for run in runs:
        events = await support.events(db, run.run_id)
        claimed = {e.job_id: e.at for e in events if e.kind == "job.claimed"}
        done = {e.job_id: e.at for e in events if e.kind == "job.succeeded"}
        intervals += [(claimed[job], done[job]) for job in claimed]
    assert len(intervals) == 20
    # two at once happened (the key was the bottleneck), never three
    assert max_overlap(intervals) == 2


CRONNED = """
id: cronned
name: cronned
version: 1.0.0
schedules:
  - {name: every-minute, cron: "* * * * *", timezone: UTC, catch_up: none, overlap: allow}
steps:
  work: {type: job, topic: t.cron.e2e}
"""


async def _next_tick(db: Database) -> datetime | None:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT next_tick FROM warden.schedules")
        row = await cur.fetchone()
    return row[0] if row else None


async def test_a_tick_with_two_serves_starts_one_run(db: Database, procs: Processes) -> None:
    await support.store(db, CRONNED)
    procs.serve()
    procs.serve()

    async def armed() -> datetime | None:
        return await _next_tick(db)

    tick = await support.wait_for(armed, timeout=30, what="a serve to arm the schedule")
    # time moves to just past the tick (the owner-only clock), not by waiting a minute
    async with db.connection() as conn:
        cur = await conn.execute("SELECT %s::timestamptz - warden.now()", [tick])
        row = await cur.fetchone()
    assert row is not None
    await support.advance_clock(db, row[0].total_seconds() + 0.5)

    async def ticked() -> bool:
        async with db.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM warden.schedule_ticks")
            got = await cur.fetchone()
        return got is not None and got[0] >= 1

    await support.wait_for(ticked, timeout=30, what="the tick to be handled")
    await asyncio.sleep(1.0)  # both serves poll every 200 ms: give the other its chances
    async with db.connection() as conn:
        cur = await conn.execute("SELECT idempotency_key FROM warden.runs "
                                 "WHERE workflow_id = 'cronned'")
        keys = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT tick, outcome FROM warden.schedule_ticks")
        ticks = await cur.fetchall()
    assert keys == [f"schedule:every-minute:{tick.isoformat()}"]
    assert [(t, o) for t, o in ticks] == [(tick, "started")]
