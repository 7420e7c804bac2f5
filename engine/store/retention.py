"""Typed wrappers for sql/queries/retention.sql: partitions and retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, fetch_all, fetch_value, jsonb
from engine.store.timeline import Head


async def ensure_partitions(conn: Conn, months_ahead: int) -> int:
    return int(await fetch_value(conn, "partitions_ensure", {"months_ahead": months_ahead}))


@dataclass(frozen=True)
class Partition:
    """One month of the timeline (and of policy_decisions) as retention sees it."""

    month_start: datetime
    month_end: datetime
    runs: int
    open_runs: int
    recent_runs: int
    needed_runs: int
    droppable: bool


async def partitions(conn: Conn, cutoff: datetime) -> list[Partition]:
    return await fetch_all(conn, "retention_partitions", {"cutoff": cutoff}, Partition)


async def heads(conn: Conn, month_start: datetime, month_end: datetime) -> list[Head]:
    return await fetch_all(conn, "retention_heads", {
        "month_start": month_start, "month_end": month_end}, Head)


async def drop(conn: Conn, *, month_start: datetime, cutoff: datetime, runs: list[Head],
               archive: str, sha256: str, by: str) -> int:
    docs: list[dict[str, Any]] = [{"tenant_id": h.tenant_id, "run_id": str(h.run_id),
                                   "seq": h.seq, "hash": h.hash} for h in runs]
    return int(await fetch_value(conn, "retention_drop", {
        "month_start": month_start, "cutoff": cutoff, "runs": jsonb(docs),
        "archive": archive, "sha256": sha256, "by": by}))


@dataclass(frozen=True)
class Archived:
    """A run retention archived: its final head and the archive that holds it."""

    tenant_id: str
    run_id: UUID
    seq: int
    hash: str
    archive: str
    archive_sha256: str
    archived_at: datetime


async def archived(conn: Conn, tenant_id: str | None, run_id: UUID | None) -> list[Archived]:
    return await fetch_all(conn, "archived_runs", {"tenant_id": tenant_id, "run_id": run_id},
                           Archived)


async def now(conn: Conn) -> datetime:
    value: datetime = await fetch_value(conn, "database_now", {})
    return value
