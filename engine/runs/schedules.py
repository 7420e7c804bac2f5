"""Cron schedules (docs/workflows.md#schedules): which ticks start runs, and starting them.

`run_due` is one pass of the cron loop of `warden serve`. Exactly one run per tick, across
serve processes and restarts, rests on two things: the run's idempotency key is derived
from the tick (``schedule:<name>:<tick>``), so however many processes start the same tick
they get the same run; and the tick's row in warden.schedule_ticks has a unique key. The
schedule row is locked (SKIP LOCKED) for the pass, so usually only one process even tries.
A run starts through the normal start path: the submit gate decides it like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from engine.core.errors import IdempotencyConflict, NotFound, PolicyDenied
from engine.definitions.flow import Schedule
from engine.runs import lifecycle, stopping
from engine.runs.services import Services
from engine.store import Database
from engine.store import runs as runs_q
from engine.store import schedules as q
from engine.store.records import ScheduleRow

log = logging.getLogger(__name__)

# A tick this late is "missed": catch_up: none lets it go. The cron loop runs every few
# seconds, so a tick on time is met well inside this.
ON_TIME = timedelta(seconds=60)
# catch_up: all starts at most this many ticks a pass; the rest wait for the next pass
MAX_TICKS_PER_PASS = 100
SCHEDULES_PER_PASS = 50


@dataclass(frozen=True)
class TickOutcome:
    tenant_id: str
    workflow_id: str
    schedule: str
    tick: datetime
    outcome: str  # started | skipped
    run_id: UUID | None


def schedule_of(row: ScheduleRow) -> Schedule:
    return Schedule(row.name, row.cron, row.timezone, row.input or {}, row.overlap,
                    row.catch_up)


def actor(row: ScheduleRow) -> str:
    return f"schedule:{row.workflow_id}/{row.name}"


def idempotency_key(name: str, tick: datetime) -> str:
    return f"schedule:{name}:{tick.isoformat()}"


def due_ticks(schedule: Schedule, next_tick: datetime,
              now: datetime) -> tuple[list[datetime], datetime]:
    """The ticks to handle now and the next unhandled tick, per ``catch_up``: none, the
    latest due tick if it is on time; last, the latest due tick however late; all, every
    due tick (a pass takes MAX_TICKS_PER_PASS, oldest first)."""
    if schedule.catch_up == "all":
        ticks: list[datetime] = []
        for tick in schedule.ticks_after(next_tick - timedelta(microseconds=1)):
            if tick > now or len(ticks) == MAX_TICKS_PER_PASS:
                return ticks, tick
            ticks.append(tick)
    latest = schedule.latest_at_or_before(now)
    following = next(iter(schedule.ticks_after(now)))
    if latest < next_tick:
        return [], following
    if schedule.catch_up == "none" and now - latest > ON_TIME:
        return [], following
    return [latest], following


async def run_due(svc: Services, *, limit: int = SCHEDULES_PER_PASS) -> list[TickOutcome]:
    """One pass: every due schedule (up to ``limit``) handled; what each tick did."""
    outcomes: list[TickOutcome] = []
    async with svc.db.transaction() as conn:
        rows = await q.lock_due(conn, limit)
        now = await runs_q.transaction_now(conn)
        for row in rows:
            schedule = schedule_of(row)
            if row.next_tick is None:  # new, changed or resumed: from the next tick on
                await q.advance(conn, row, next_tick=next(iter(schedule.ticks_after(now))),
                                last_tick=None)
                continue
            ticks, following = due_ticks(schedule, row.next_tick, now)
            for tick in ticks:
                outcome = await _handle_tick(svc, row, tick)
                recorded = await q.record_tick(conn, row, tick=tick, outcome=outcome[0],
                                               run_id=outcome[1])
                if recorded is not None:
                    outcomes.append(TickOutcome(row.tenant_id, row.workflow_id, row.name,
                                                tick, outcome[0], outcome[1]))
            await q.advance(conn, row, next_tick=following,
                            last_tick=ticks[-1] if ticks else None)
    return outcomes


async def _handle_tick(svc: Services, row: ScheduleRow,
                       tick: datetime) -> tuple[str, UUID | None]:
    """Starts the tick's run (or finds the one it started before), after the overlap rule."""
    key = idempotency_key(row.name, tick)
    async with svc.db.connection() as conn:
        existing = await runs_q.by_idempotency_key(conn, row.tenant_id, row.workflow_id, key)
        open_runs = [] if existing is not None else await q.open_runs(conn, row)
    if existing is not None:  # started before a crash or by another serve
        return "started", existing.run_id
    if open_runs and row.overlap == "skip":
        log.info("schedule %s/%s: tick %s skipped, %d run(s) still open", row.workflow_id,
                 row.name, tick.isoformat(), len(open_runs))
        return "skipped", None
    if row.overlap == "cancel_previous":
        for run_id in open_runs:
            try:
                await stopping.cancel(svc.db, tenant_id=row.tenant_id, run_id=run_id,
                                      by=actor(row), reason=f"tick {tick.isoformat()} "
                                                            "(overlap: cancel_previous)")
            except Exception as exc:  # it ended meanwhile: nothing to cancel
                log.info("schedule %s/%s: run %s not cancelled: %s", row.workflow_id,
                         row.name, run_id, exc)
    return "started", await _start(svc, row, tick, key)


async def _start(svc: Services, row: ScheduleRow, tick: datetime, key: str) -> UUID:
    run_input: dict[str, Any] = dict(row.input or {})
    try:
        started = await lifecycle.start(svc, tenant_id=row.tenant_id,
                                        workflow_id=row.workflow_id, input=run_input,
                                        created_by=actor(row), idempotency_key=key)
        return started.run.run_id
    except PolicyDenied:
        # the denied run is committed with its decisions: the tick did start it
        async with svc.db.connection() as conn:
            denied = await runs_q.by_idempotency_key(conn, row.tenant_id, row.workflow_id, key)
        if denied is None:
            raise NotFound(f"the denied run of {key!r} is gone") from None
        return denied.run_id
    except IdempotencyConflict:
        # the key started a run with another input (the schedule's input changed between a
        # crash and now): that run is the tick's
        async with svc.db.connection() as conn:
            found = await runs_q.by_idempotency_key(conn, row.tenant_id, row.workflow_id, key)
        if found is None:
            raise
        return found.run_id


NEXT_TICKS_SHOWN = 3


async def listing(db: Database, tenant_id: str | None, *,
                  include_inactive: bool = False) -> tuple[list[q.ScheduleListRow], datetime]:
    """A tenant's schedules (every tenant's for None), and the database time they were
    read at (their next ticks are counted from it)."""
    async with db.connection() as conn:
        rows = await q.listing(conn, tenant_id, include_inactive=include_inactive)
        now = await runs_q.transaction_now(conn)
    return rows, now


async def set_paused(db: Database, *, tenant_id: str, workflow_id: str, name: str,
                     paused: bool, by: str) -> ScheduleRow:
    async with db.transaction() as conn:
        row = await q.set_paused(conn, tenant_id=tenant_id, workflow_id=workflow_id,
                                 name=name, paused=paused, by=by)
    if row is None:
        raise NotFound(f"workflow {workflow_id!r} has no schedule {name!r}")
    return row


def next_ticks(row: ScheduleRow, now: datetime, count: int = NEXT_TICKS_SHOWN) -> list[datetime]:
    """The ticks that will start runs, if nothing is paused or changed: from the row's
    next tick when it is set and still ahead, else from now."""
    if not row.active or row.paused:
        return []
    start = row.next_tick - timedelta(microseconds=1) \
        if row.next_tick is not None and row.next_tick > now else now
    ticks = schedule_of(row).ticks_after(start)
    return [next(ticks) for _ in range(count)]


def schedule_doc(row: ScheduleRow, now: datetime) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "tenant_id": row.tenant_id, "workflow_id": row.workflow_id, "name": row.name,
        "workflow_version": row.workflow_version, "cron": row.cron, "timezone": row.timezone,
        "input": row.input, "overlap": row.overlap, "catch_up": row.catch_up,
        "active": row.active, "paused": row.paused, "paused_by": row.paused_by,
        "paused_at": _iso(row.paused_at), "last_tick": _iso(row.last_tick),
        "next_ticks": [t.isoformat() for t in next_ticks(row, now)]}
    if isinstance(row, q.ScheduleListRow):
        doc["last_run_id"] = None if row.last_run_id is None else str(row.last_run_id)
        doc["last_outcome"] = row.last_outcome
    return doc


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
