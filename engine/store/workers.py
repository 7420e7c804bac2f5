"""Typed wrappers for sql/queries/workers.sql."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, execute, fetch_all, fetch_dicts, fetch_one
from engine.store.records import QueueRow, WorkerRow


async def register(conn: Conn, *, name: str, host: str, pid: int, topics: Sequence[str],
                   concurrency: int, version: str, heartbeat_ms: int) -> WorkerRow:
    row = await fetch_one(conn, "worker_register", {
        "name": name, "host": host, "pid": pid, "topics": list(topics),
        "concurrency": concurrency, "version": version, "heartbeat_ms": heartbeat_ms},
        WorkerRow)
    assert row is not None  # an INSERT … RETURNING
    return row


async def heartbeat(conn: Conn, worker_id: UUID, jobs_in_flight: int) -> WorkerRow | None:
    return await fetch_one(conn, "worker_heartbeat", {
        "worker_id": worker_id, "jobs_in_flight": jobs_in_flight}, WorkerRow)


async def stop(conn: Conn, worker_id: UUID) -> None:
    await execute(conn, "worker_stop", {"worker_id": worker_id})


async def listing(conn: Conn, *, include_gone: bool) -> list[WorkerRow]:
    return await fetch_all(conn, "workers_list", {"include_gone": include_gone}, WorkerRow)


async def live_per_topic(conn: Conn, topics: Sequence[str]) -> dict[str, int]:
    if not topics:
        return {}
    rows = await fetch_dicts(conn, "workers_live_per_topic", {"topics": sorted(set(topics))})
    return {r["topic"]: int(r["live_workers"]) for r in rows}


async def queues(conn: Conn, tenant_id: str | None) -> list[QueueRow]:
    return await fetch_all(conn, "queues_list", {"tenant_id": tenant_id}, QueueRow)


async def unattended(conn: Conn) -> list[dict[str, Any]]:
    return await fetch_dicts(conn, "metrics_unattended", {})
