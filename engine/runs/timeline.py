"""Reading and verifying run timelines (writing happens inside each state change)."""

from __future__ import annotations

from uuid import UUID

from engine.runs.lifecycle import get_row
from engine.store import Database
from engine.store import timeline as q
from engine.store.records import TimelineEvent

MAX_PAGE = 1000


async def page(db: Database, tenant_id: str | None, run_id: UUID, *, after: int = 0,
               limit: int = 200) -> list[TimelineEvent]:
    """Events after seq ``after``; page on with the last seq until a short page comes back."""
    async with db.connection() as conn:
        run = await get_row(conn, tenant_id, run_id)
        return await q.page(conn, run.tenant_id, run_id, after=after,
                            limit=max(1, min(limit, MAX_PAGE)))


async def all_events(db: Database, tenant_id: str | None, run_id: UUID) -> list[TimelineEvent]:
    events: list[TimelineEvent] = []
    while True:
        batch = await page(db, tenant_id, run_id, after=events[-1].seq if events else 0,
                           limit=MAX_PAGE)
        events.extend(batch)
        if len(batch) < MAX_PAGE:
            return events


async def verify(db: Database, run_id: UUID) -> bool:
    async with db.connection() as conn:
        return await q.verify(conn, run_id)


async def check(db: Database, tenant_id: str | None,
                run_id: UUID | None = None) -> tuple[int, list[q.ChainProblem]]:
    """(runs checked, the first problem of each broken chain) for one run, a tenant's runs
    or every run, in one pass over the timeline."""
    async with db.connection() as conn:
        checked = await q.runs_count(conn, tenant_id, run_id)
        return checked, await q.problems(conn, tenant_id, run_id)


async def rotate_key(db: Database, by: str) -> int:
    """Retires the active chain key and makes the next one; returns its key_id."""
    async with db.transaction() as conn:
        return await q.rotate_key(conn, by)
