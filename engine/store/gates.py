"""Typed wrappers for sql/queries/gates.sql: what the flow control gates hold back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from engine.store.connection import Conn, fetch_all


@dataclass(frozen=True)
class GateWait:
    """A pending gated job and the state of its gates right now."""

    job_id: str
    concurrency_key: str
    concurrency_limit: int | None
    running: int | None
    rate_key: str
    rate_limit: int | None
    rate_per_ms: int | None
    claims_in_window: int | None
    rate_free_at: datetime | None


@dataclass(frozen=True)
class GateLoad:
    kind: str  # concurrency | rate
    tenant_id: str
    key: str
    limit: int
    in_use: int  # running jobs, or claims inside the window
    waiting: int  # pending jobs carrying the key


async def waiting_of_run(conn: Conn, tenant_id: str, run_id: UUID) -> dict[str, GateWait]:
    rows = await fetch_all(conn, "gates_waiting_of_run",
                           {"tenant_id": tenant_id, "run_id": run_id}, GateWait)
    return {row.job_id: row for row in rows}


async def load(conn: Conn) -> list[GateLoad]:
    return await fetch_all(conn, "gates_metrics", {}, GateLoad)
