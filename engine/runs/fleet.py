"""The fleet as operators see it: registered workers and the queue of each topic."""

from __future__ import annotations

from engine.store import Database
from engine.store import workers as q
from engine.store.records import QueueRow, WorkerRow


async def workers(db: Database, *, include_gone: bool = False) -> list[WorkerRow]:
    """Live workers first; with ``include_gone``, also dead and stopped ones (kept a day)."""
    async with db.connection() as conn:
        return await q.listing(conn, include_gone=include_gone)


async def queues(db: Database, tenant_id: str | None) -> list[QueueRow]:
    """One row per topic with work or a live worker (jobs of the tenant; None: all)."""
    async with db.connection() as conn:
        return await q.queues(conn, tenant_id)
