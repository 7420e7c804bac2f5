"""Typed wrappers for sql/queries/notifications.sql: the outbox and webhook delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, execute, fetch_all, fetch_one, jsonb
from engine.store.records import NotificationRow


async def insert(conn: Conn, *, tenant_id: str, run_id: UUID, step_id: str,
                 message: str | None, webhook: str | None, payload: Any) -> NotificationRow:
    row = await fetch_one(conn, "notification_insert", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id, "message": message,
        "webhook": webhook, "payload": jsonb(payload)}, NotificationRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    await execute(conn, "notification_announce", {"notification_id": row.notification_id})
    return row


async def claim(conn: Conn, *, limit: int, lease: timedelta,
                max_attempts: int) -> list[NotificationRow]:
    """Leases due deliveries with an attempt left (status delivering, attempts + 1)."""
    return await fetch_all(conn, "notifications_claim", {
        "limit": limit, "lease": lease, "max_attempts": max_attempts}, NotificationRow)


async def give_up_exhausted(conn: Conn, *, limit: int,
                            max_attempts: int) -> list[NotificationRow]:
    """Fails due deliveries that have used every attempt."""
    return await fetch_all(conn, "notifications_give_up_exhausted", {
        "limit": limit, "max_attempts": max_attempts}, NotificationRow)


async def record_delivered(conn: Conn, note: NotificationRow,
                           status_code: int) -> NotificationRow | None:
    """Marks ``note`` (as claimed) delivered; None if its attempt lost the lease."""
    return await fetch_one(conn, "notification_delivered", {
        "tenant_id": note.tenant_id, "notification_id": note.notification_id,
        "attempt": note.attempts, "status_code": status_code}, NotificationRow)


@dataclass(frozen=True)
class Backoff:
    """The delay before attempt n+1: ``base_s * 2^(n-1)``, capped, plus up to ``jitter``."""

    base_s: float = 10.0
    max_s: float = 3600.0
    jitter: float = 0.25


async def record_failure(conn: Conn, note: NotificationRow, *, give_up: bool,
                         status_code: int | None, error: str, backoff: Backoff,
                         retry_after_s: float | None = None) -> NotificationRow | None:
    """Records a failed attempt of ``note`` (as claimed): failed for good, or pending again
    after the backoff. None if its attempt lost the lease."""
    return await fetch_one(conn, "notification_attempt_failed", {
        "tenant_id": note.tenant_id, "notification_id": note.notification_id,
        "attempt": note.attempts, "give_up": give_up, "status_code": status_code,
        "error": error, "backoff_s": backoff.base_s, "max_backoff_s": backoff.max_s,
        "jitter": backoff.jitter, "retry_after_s": retry_after_s}, NotificationRow)
