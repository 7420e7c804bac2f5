"""Reading jobs and their policy decisions (workers write through the SQL protocol)."""

from __future__ import annotations

from datetime import datetime

from engine.core.enums import JobStatus
from engine.core.errors import NotFound
from engine.store import Database
from engine.store import jobs as q
from engine.store.records import JobRow


async def get(db: Database, tenant_id: str, job_id: str) -> JobRow:
    async with db.connection() as conn:
        row = await q.get(conn, tenant_id, job_id)
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row


async def page(db: Database, tenant_id: str, *, status: JobStatus | None = None,
               topic: str | None = None, before: tuple[datetime, str] | None = None,
               limit: int = 50) -> list[JobRow]:
    async with db.connection() as conn:
        return await q.page(conn, tenant_id, status=status, topic=topic, before=before,
                            limit=max(1, min(limit, 500)))
