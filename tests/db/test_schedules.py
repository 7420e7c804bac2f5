"""Cron schedules (docs/workflows.md#schedules): one run per tick across serve processes
and restarts, catch-up after downtime, overlap, pause and resume. Time moves with the
owner-only database clock (warden.clock), never by sleeping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from engine.core.errors import InvalidDefinition
from engine.definitions.flow import Schedule
from engine.governance.policy import Verdict
from engine.runs import schedules
from engine.runs.services import Services
from engine.store import Database
from engine.store import schedules as schedules_q
from tests import support

pytestmark = pytest.mark.anyio


def every_5(catch_up: str = "none", overlap: str = "allow", version: str = "1.0.0") -> str:
    return f"""
id: cronned
name: cronned
version: {version}
schedules:
  - name: tick
    cron: "*/5 * * * *"
    timezone: Europe/Paris
    input: {{source: cron}}
    overlap: {overlap}
    catch_up: {catch_up}
steps:
  work: {{type: job, topic: t.cron}}
"""


async def _to(db: Database, target: datetime) -> None:
    """Moves the database clock so that warden.now() is about ``target``."""
    async with db.connection() as conn:
        cur = await conn.execute("SELECT warden.now()")
        row = await cur.fetchone()
    assert row is not None
    await support.advance_clock(db, (target - row[0]).total_seconds())


async def _runs(db: Database) -> list[tuple[str, str]]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT idempotency_key, created_by FROM warden.runs WHERE workflow_id = 'cronned' "
            "ORDER BY idempotency_key")
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def _armed(svc: Services, db: Database, source: str) -> datetime:
    """Stores the workflow and lets a first pass set the schedule's next tick."""
    await support.store(db, source)
    assert await schedules.run_due(svc) == []
    async with db.connection() as conn:
        [row] = await schedules_q.listing(conn, "default")
    assert row.next_tick is not None and row.last_run_id is None
    return row.next_tick


async def test_a_tick_met_by_two_serves_starts_one_run(svc: Services, db: Database) -> None:
    tick = await _armed(svc, db, every_5())
    await _to(db, tick + timedelta(seconds=1))
    other = Services.create(db, policy_default=Verdict.ALLOW)
    first, second = await asyncio.gather(schedules.run_due(svc), schedules.run_due(other))
    assert len(first) + len(second) == 1
    # a restarted serve (the schedule's next tick reset to the one already handled) finds
    # the run the tick started and starts nothing
    async with db.connection() as conn:
        await conn.execute("UPDATE warden.schedules SET next_tick = %s", [tick])
    assert await schedules.run_due(svc) == []
    runs = await _runs(db)
    assert runs == [(schedules.idempotency_key("tick", tick), "schedule:cronned/tick")]


@pytest.mark.parametrize(("catch_up", "started"), [("none", 0), ("last", 1), ("all", 3)])
async def test_a_serve_down_across_three_ticks_catches_up_as_configured(
        svc: Services, db: Database, catch_up: str, started: int) -> None:
    tick = await _armed(svc, db, every_5(catch_up))
    # down from before `tick` until two minutes after the third tick
    await _to(db, tick + timedelta(minutes=12))
    outcomes = await schedules.run_due(svc)
    assert len(outcomes) == started
    runs = await _runs(db)
    assert len(runs) == started
    if catch_up == "last":
        assert runs[0][0] == schedules.idempotency_key("tick", tick + timedelta(minutes=10))
    # and the next tick is the one after now, whatever was caught up
    async with db.connection() as conn:
        [row] = await schedules_q.listing(conn, "default")
    assert row.next_tick == tick + timedelta(minutes=15)


async def test_overlap_skip_leaves_a_tick_while_the_previous_run_is_open(
        svc: Services, db: Database) -> None:
    tick = await _armed(svc, db, every_5(overlap="skip"))
    await _to(db, tick + timedelta(seconds=1))
    [first] = await schedules.run_due(svc)
    await _to(db, tick + timedelta(minutes=5, seconds=1))
    [second] = await schedules.run_due(svc)
    assert (first.outcome, second.outcome) == ("started", "skipped")
    assert second.run_id is None and len(await _runs(db)) == 1


async def test_overlap_cancel_previous_cancels_the_open_run(
        svc: Services, db: Database) -> None:
    tick = await _armed(svc, db, every_5(overlap="cancel_previous"))
    await _to(db, tick + timedelta(seconds=1))
    [first] = await schedules.run_due(svc)
    await _to(db, tick + timedelta(minutes=5, seconds=1))
    [second] = await schedules.run_due(svc)
    assert second.outcome == "started" and second.run_id != first.run_id
    assert first.run_id is not None
    detail = await support.detail(db, first.run_id)
    assert detail.run.status.value == "cancelled"


async def test_a_paused_schedule_starts_nothing_and_resumes_from_its_next_tick(
        svc: Services, db: Database) -> None:
    tick = await _armed(svc, db, every_5(catch_up="all"))
    async with db.connection() as conn:
        paused = await schedules_q.set_paused(conn, tenant_id="default", workflow_id="cronned",
                                              name="tick", paused=True, by="ops")
    assert paused is not None and paused.paused
    await _to(db, tick + timedelta(minutes=11))
    assert await schedules.run_due(svc) == []
    async with db.connection() as conn:
        await schedules_q.set_paused(conn, tenant_id="default", workflow_id="cronned",
                                     name="tick", paused=False, by="ops")
    # resumed: the ticks it slept through are not caught up, even with catch_up: all
    assert await schedules.run_due(svc) == []
    assert await _runs(db) == []


async def test_a_new_version_without_the_schedule_deactivates_it(
        svc: Services, db: Database) -> None:
    await _armed(svc, db, every_5())
    await support.store(db, """
id: cronned
name: cronned
version: 2.0.0
steps:
  work: {type: job, topic: t.cron}
""")
    async with db.connection() as conn:
        assert await schedules_q.listing(conn, "default") == []
        [gone] = await schedules_q.listing(conn, "default", include_inactive=True)
    assert not gone.active


async def test_bad_schedules_are_refused_with_their_field(db: Database) -> None:
    for bad, field in [(('"*/5 * * * *"', '"*/5 * * *"'), r"schedules\[0\]\.cron"),
                       (("Europe/Paris", "Europe/Atlantis"), r"schedules\[0\]\.timezone"),
                       (("overlap: allow", "overlap: sometimes"), r"schedules\[0\]\.overlap"),
                       (("catch_up: none", "catch_up: most"), r"schedules\[0\]\.catch_up")]:
        with pytest.raises(InvalidDefinition, match=field):
            await support.store(db, every_5().replace(*bad))
        async with db.connection() as conn:
            assert await schedules_q.listing(conn, None, include_inactive=True) == []


def test_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    daily = Schedule("d", "30 9 * * *", "Europe/Paris", {})
    start = datetime(2026, 3, 27, 12, tzinfo=UTC)
    ticks = list(zip(range(3), daily.ticks_after(start), strict=False))
    # 09:30 in Paris is 08:30 UTC before the change (CET) and 07:30 UTC after it (CEST)
    assert [t.isoformat() for _, t in ticks] == [
        "2026-03-28T08:30:00+00:00", "2026-03-29T07:30:00+00:00", "2026-03-30T07:30:00+00:00"]
