"""Typed wrappers for sql/queries/timeline.sql."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from engine.store.connection import (
    Conn,
    execute,
    fetch_all,
    fetch_value,
    jsonb,
    shallow_dict,
)
from engine.store.records import RunKey, TimelineEvent

log = logging.getLogger("engine.events")


async def append(conn: Conn, tenant_id: str, run_id: UUID, kind: str, *,
                 step_id: str | None = None, job_id: str | None = None,
                 attempt: int | None = None, actor: str | None = None,
                 data: dict[str, Any] | None = None) -> int:
    seq: int = await fetch_value(conn, "event_append", {
        "tenant_id": tenant_id, "run_id": run_id, "kind": kind, "step_id": step_id,
        "job_id": job_id, "attempt": attempt, "actor": actor, "data": jsonb(data or {})})
    _log(tenant_id, run_id, Event(kind, step_id, job_id, attempt, actor))
    return seq


def _log(tenant_id: str, run_id: UUID, event: Event) -> None:
    """Every engine-side state change writes an event here, so this is the one place that
    logs them: one INFO line each, with stable keys for JSON logs. (Logged before the
    commit; a rolled-back change has a log line and no event.)"""
    log.info("%s run=%s step=%s job=%s by=%s", event.kind, run_id, event.step_id or "-",
             event.job_id or "-", event.actor or "-",
             extra={"event": event.kind, "tenant_id": tenant_id, "run_id": str(run_id),
                    "step_id": event.step_id, "job_id": event.job_id, "actor": event.actor})


async def page(conn: Conn, tenant_id: str, run_id: UUID, *, after: int,
               limit: int) -> list[TimelineEvent]:
    return await fetch_all(conn, "timeline_page", {
        "tenant_id": tenant_id, "run_id": run_id, "after": after, "limit": limit},
        TimelineEvent)


async def verify(conn: Conn, run_id: UUID) -> bool:
    return bool(await fetch_value(conn, "timeline_verify", {"run_id": run_id}))


@dataclass(frozen=True)
class ChainProblem:
    """The first thing wrong with one run's chain (warden.timeline_problems)."""

    tenant_id: str
    run_id: UUID
    seq: int
    problem: str


async def problems(conn: Conn, tenant_id: str | None,
                   run_id: UUID | None) -> list[ChainProblem]:
    return await fetch_all(conn, "timeline_problems",
                           {"tenant_id": tenant_id, "run_id": run_id}, ChainProblem)


async def problems_of_runs(conn: Conn, runs: list[tuple[str, UUID]]) -> list[ChainProblem]:
    """The first problem of each broken chain among ``runs`` (one statement)."""
    if not runs:
        return []
    return await fetch_all(conn, "timeline_problems_of_runs", {"runs": jsonb([
        {"tenant_id": t, "run_id": str(r)} for t, r in runs])}, ChainProblem)


async def runs_count(conn: Conn, tenant_id: str | None, run_id: UUID | None) -> int:
    return int(await fetch_value(conn, "runs_count", {"tenant_id": tenant_id,
                                                      "run_id": run_id}))


async def rotate_key(conn: Conn, by: str) -> int:
    return int(await fetch_value(conn, "chain_key_rotate", {"by": by}))


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
        "events": jsonb([shallow_dict(event) for event in events])})
    for event in events:
        _log(tenant_id, run_id, event)
    return seq


async def append_for_runs(conn: Conn, batch: dict[RunKey, list[Event]]) -> None:
    """Appends several runs' events, each run's in order, in one statement (the caller
    holds the runs' locks, as a scheduler pass does)."""
    docs = [{"tenant_id": tenant_id, "run_id": str(run_id),
             "events": [shallow_dict(event) for event in events]}
            for (tenant_id, run_id), events in batch.items() if events]
    if not docs:
        return
    await execute(conn, "events_append_for_runs", {"batch": jsonb(docs)})
    for (tenant_id, run_id), events in batch.items():
        for event in events:
            _log(tenant_id, run_id, event)


@dataclass(frozen=True)
class Head:
    """A run's chain head: its last event's seq and hash."""

    tenant_id: str
    run_id: UUID
    seq: int
    hash: str


async def run_heads(conn: Conn) -> list[Head]:
    return await fetch_all(conn, "run_heads", {}, Head)


@dataclass(frozen=True)
class HashAt:
    """The hash the database holds at an anchored (run, seq) now (None: the event is gone)."""

    tenant_id: str
    run_id: UUID
    seq: int
    hash: str | None
    run_exists: bool


async def hashes_at(conn: Conn, points: list[tuple[str, UUID, int]]) -> list[HashAt]:
    return await fetch_all(conn, "timeline_hashes_at", {"points": jsonb([
        {"tenant_id": t, "run_id": str(r), "seq": s} for t, r, s in points])}, HashAt)
