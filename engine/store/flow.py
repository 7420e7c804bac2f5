"""Typed wrappers for sql/queries/flow.sql: sleep and wait_event steps, and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from engine.core.enums import StepStatus
from engine.core.errors import InvalidTransition
from engine.core.states import STEP_TRANSITIONS
from engine.store.connection import (
    Conn,
    fetch_all,
    fetch_dicts,
    fetch_one,
    fetch_value,
    jsonb,
)
from engine.store.records import EventRow, RunKey, SentEvent, StepRow


async def begin_wait(conn: Conn, step: StepRow, *, wake_at: datetime | None,
                     await_event: str | None = None, await_key: str | None = None
                     ) -> StepRow | None:
    """Moves a pending step to waiting; None if it was no longer pending."""
    if StepStatus.WAITING not in STEP_TRANSITIONS.get(step.status, frozenset()):
        raise InvalidTransition(f"step {step.step_id} cannot move from {step.status} "
                                "to waiting")
    return await fetch_one(conn, "step_begin_wait", {
        "tenant_id": step.tenant_id, "run_id": step.run_id, "step_id": step.step_id,
        "wake_at": wake_at, "await_event": await_event, "await_key": await_key}, StepRow)


async def try_event_lock(conn: Conn, tenant_id: str, name: str, key: str) -> bool:
    return bool(await fetch_value(conn, "event_try_lock",
                                  {"tenant_id": tenant_id, "name": name, "key": key}))


async def match_event(conn: Conn, tenant_id: str, name: str, key: str,
                      since: datetime) -> EventRow | None:
    return await fetch_one(conn, "event_match", {
        "tenant_id": tenant_id, "name": name, "key": key, "since": since}, EventRow)


async def send_event(conn: Conn, *, tenant_id: str, event_id: str, name: str, key: str,
                     data: Any, sent_by: str, keep_ms: int | None) -> SentEvent:
    sent = await fetch_one(conn, "event_send", {
        "tenant_id": tenant_id, "event_id": event_id, "name": name, "key": key,
        "data": jsonb(data), "sent_by": sent_by, "keep_ms": keep_ms}, SentEvent)
    assert sent is not None  # the function always returns one row
    return sent


async def get_event(conn: Conn, tenant_id: str, event_id: str) -> EventRow | None:
    return await fetch_one(conn, "event_get", {"tenant_id": tenant_id, "event_id": event_id},
                           EventRow)


async def wake_due(conn: Conn, limit: int) -> list[RunKey]:
    """Flags the runs whose timers or wait timeouts came due; returns them."""
    rows = await fetch_all(conn, "steps_wake_due", {"limit": limit}, _Key)
    return [(row.tenant_id, row.run_id) for row in rows]


async def flow_events(conn: Conn, tenant_id: str, run_id: UUID) -> list[dict[str, Any]]:
    """The run's step.condition and wait.matched events (step_id, kind, data), in order."""
    return await fetch_dicts(conn, "timeline_flow_events",
                             {"tenant_id": tenant_id, "run_id": run_id})


async def seconds_to_next_wake(conn: Conn) -> float | None:
    value: Any = await fetch_value(conn, "steps_next_wake", {})
    return float(value) if value is not None else None


class _Key:
    def __init__(self, tenant_id: str, run_id: UUID) -> None:
        self.tenant_id = tenant_id
        self.run_id = run_id
