"""Typed wrappers for sql/queries/timeline.sql."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, fetch_all, fetch_dicts, fetch_value, jsonb
from engine.store.records import TimelineEvent


async def append(conn: Conn, tenant_id: str, run_id: UUID, kind: str, *,
                 step_id: str | None = None, job_id: str | None = None,
                 attempt: int | None = None, actor: str | None = None,
                 data: dict[str, Any] | None = None) -> int:
    seq: int = await fetch_value(conn, "event_append", {
        "tenant_id": tenant_id, "run_id": run_id, "kind": kind, "step_id": step_id,
        "job_id": job_id, "attempt": attempt, "actor": actor, "data": jsonb(data or {})})
    return seq


async def page(conn: Conn, tenant_id: str, run_id: UUID, *, after: int,
               limit: int) -> list[TimelineEvent]:
    return await fetch_all(conn, "timeline_page", {
        "tenant_id": tenant_id, "run_id": run_id, "after": after, "limit": limit},
        TimelineEvent)


async def verify(conn: Conn, run_id: UUID) -> bool:
    return bool(await fetch_value(conn, "timeline_verify", {"run_id": run_id}))


async def verify_all(conn: Conn, tenant_id: str | None) -> list[tuple[str, UUID, bool]]:
    rows = await fetch_dicts(conn, "timeline_verify_all", {"tenant_id": tenant_id})
    return [(r["tenant_id"], r["run_id"], bool(r["ok"])) for r in rows]


@dataclass(frozen=True)
class Event:
    """One timeline event not yet written (the run and its seq come at append time)."""

    kind: str
    step_id: str | None = None
    job_id: str | None = None
    attempt: int | None = None
    actor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


async def append_many(conn: Conn, tenant_id: str, run_id: UUID, events: list[Event]) -> int:
    """Appends one run's events in order, in one call (the run row is updated once)."""
    if not events:
        return 0
    seq: int = await fetch_value(conn, "events_append", {
        "tenant_id": tenant_id, "run_id": run_id,
        "events": jsonb([asdict(event) for event in events])})
    return seq
