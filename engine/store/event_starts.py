"""Typed wrappers for sql/queries/event_starts.sql (docs/workflows.md#event-started-runs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, execute, fetch_all, fetch_one, jsonb


@dataclass(frozen=True)
class PendingStart:
    """An event an active subscription has not handled yet, with the subscription."""

    tenant_id: str
    event_id: str
    event_name: str
    event_key: str
    event_data: Any
    received_at: datetime
    workflow_id: str
    workflow_version: str
    input: Any


@dataclass(frozen=True)
class EventStartRow:
    """A row of warden.event_starts; event_key is the event's, when it is still kept."""

    tenant_id: str
    event_id: str
    workflow_id: str
    event_name: str
    outcome: str  # started | denied | failed
    run_id: UUID | None
    error: str | None
    created_at: datetime
    event_key: str | None = None


async def sync(conn: Conn, *, tenant_id: str, workflow_id: str, version: str,
               on_event: Sequence[dict[str, Any]]) -> None:
    await execute(conn, "event_triggers_sync", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "version": version,
        "on_event": jsonb(list(on_event))})


async def lock_pending(conn: Conn, limit: int) -> list[PendingStart]:
    return await fetch_all(conn, "event_starts_lock_pending", {"limit": limit}, PendingStart)


async def record(conn: Conn, pending: PendingStart, *, outcome: str, run_id: UUID | None,
                 error: str | None) -> EventStartRow | None:
    return await fetch_one(conn, "event_start_record", {
        "tenant_id": pending.tenant_id, "event_id": pending.event_id,
        "workflow_id": pending.workflow_id, "event_name": pending.event_name,
        "outcome": outcome, "run_id": run_id, "error": error}, EventStartRow)


async def of_run(conn: Conn, tenant_id: str, run_id: UUID) -> EventStartRow | None:
    return await fetch_one(conn, "event_start_of_run",
                           {"tenant_id": tenant_id, "run_id": run_id}, EventStartRow)


async def of_event(conn: Conn, tenant_id: str, event_id: str) -> list[EventStartRow]:
    return await fetch_all(conn, "event_starts_of_event",
                           {"tenant_id": tenant_id, "event_id": event_id}, EventStartRow)
