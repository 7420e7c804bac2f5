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


async def verify_all(db: Database, tenant_id: str | None) -> list[tuple[str, UUID, bool]]:
    """(tenant, run, chain holds) for every run of the tenant, or of all tenants."""
    async with db.connection() as conn:
        return await q.verify_all(conn, tenant_id)
