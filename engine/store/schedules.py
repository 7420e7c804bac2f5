"""Typed wrappers for sql/queries/schedules.sql (docs/workflows.md#schedules)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, execute, fetch_all, fetch_dicts, fetch_one, jsonb
from engine.store.records import ScheduleRow, ScheduleTickRow


@dataclass(frozen=True)
class ScheduleListRow(ScheduleRow):
    """A schedule with its most recent tick's outcome and run."""

    last_run_id: UUID | None = None
    last_outcome: str | None = None


async def sync(conn: Conn, *, tenant_id: str, workflow_id: str, version: str,
               schedules: Sequence[dict[str, Any]]) -> None:
    await execute(conn, "schedules_sync", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "version": version,
        "schedules": jsonb(list(schedules))})


async def lock_due(conn: Conn, limit: int) -> list[ScheduleRow]:
    return await fetch_all(conn, "schedules_lock_due", {"limit": limit}, ScheduleRow)


async def advance(conn: Conn, row: ScheduleRow, *, next_tick: datetime,
                  last_tick: datetime | None) -> None:
    await execute(conn, "schedule_advance", {
        "tenant_id": row.tenant_id, "workflow_id": row.workflow_id, "name": row.name,
        "next_tick": next_tick, "last_tick": last_tick})


async def record_tick(conn: Conn, row: ScheduleRow, *, tick: datetime, outcome: str,
                      run_id: UUID | None) -> ScheduleTickRow | None:
    return await fetch_one(conn, "schedule_tick_record", {
        "tenant_id": row.tenant_id, "workflow_id": row.workflow_id, "name": row.name,
        "tick": tick, "outcome": outcome, "run_id": run_id}, ScheduleTickRow)


async def open_runs(conn: Conn, row: ScheduleRow) -> list[UUID]:
    rows = await fetch_dicts(conn, "schedule_open_runs", {
        "tenant_id": row.tenant_id, "workflow_id": row.workflow_id, "name": row.name})
    return [r["run_id"] for r in rows]


async def listing(conn: Conn, tenant_id: str | None, *,
                  include_inactive: bool = False) -> list[ScheduleListRow]:
    return await fetch_all(conn, "schedules_list", {
        "tenant_id": tenant_id, "include_inactive": include_inactive}, ScheduleListRow)


async def set_paused(conn: Conn, *, tenant_id: str, workflow_id: str, name: str,
                     paused: bool, by: str) -> ScheduleRow | None:
    return await fetch_one(conn, "schedule_set_paused", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "name": name, "paused": paused,
        "by": by}, ScheduleRow)


async def ticks(conn: Conn, *, tenant_id: str, workflow_id: str, name: str,
                limit: int) -> list[ScheduleTickRow]:
    return await fetch_all(conn, "schedule_ticks_of", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "name": name, "limit": limit},
        ScheduleTickRow)
