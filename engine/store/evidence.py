"""Typed wrappers for sql/queries/evidence.sql: a run's evidence as JSON documents."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from engine.store.connection import Conn, execute, fetch_dicts

Doc = dict[str, Any]


async def runs(conn: Conn, *, run_id: UUID | None, tenant_id: str | None,
               since: datetime | None, until: datetime | None) -> list[Doc]:
    rows = await fetch_dicts(conn, "evidence_runs", {
        "run_id": run_id, "tenant_id": tenant_id, "since": since, "until": until})
    return [r["doc"] for r in rows]


async def _of_run(conn: Conn, name: str, tenant_id: str, run_id: UUID) -> list[Doc]:
    rows = await fetch_dicts(conn, name, {"tenant_id": tenant_id, "run_id": run_id})
    return [r["doc"] for r in rows]


async def events(conn: Conn, tenant_id: str, run_id: UUID) -> list[Doc]:
    return await _of_run(conn, "evidence_events", tenant_id, run_id)


async def decisions(conn: Conn, tenant_id: str, run_id: UUID) -> list[Doc]:
    return await _of_run(conn, "evidence_decisions", tenant_id, run_id)


async def approvals(conn: Conn, tenant_id: str, run_id: UUID) -> list[Doc]:
    return await _of_run(conn, "evidence_approvals", tenant_id, run_id)


async def jobs(conn: Conn, tenant_id: str, run_id: UUID) -> list[Doc]:
    return await _of_run(conn, "evidence_jobs", tenant_id, run_id)


async def snapshot(conn: Conn) -> None:
    """Makes the rest of the caller's transaction read one snapshot (read only)."""
    await execute(conn, "evidence_snapshot", {})
