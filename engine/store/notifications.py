"""Typed wrappers for sql/queries/notifications.sql."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from engine.store.connection import Conn, execute, fetch_one, jsonb
from engine.store.records import NotificationRow


async def insert(conn: Conn, *, tenant_id: str, run_id: UUID, step_id: str,
                 message: str | None, webhook: str | None, payload: Any) -> NotificationRow:
    row = await fetch_one(conn, "notification_insert", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id, "message": message,
        "webhook": webhook, "payload": jsonb(payload)}, NotificationRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    await execute(conn, "notification_announce", {"notification_id": row.notification_id})
    return row
