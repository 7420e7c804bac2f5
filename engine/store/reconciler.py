"""Typed wrappers for sql/queries/reconciler.sql."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from engine.store.connection import Conn, fetch_all, fetch_dicts, fetch_one
from engine.store.records import JobRow, RunRow, StepRow


async def runs_past_deadline(conn: Conn, limit: int) -> list[RunRow]:
    return await fetch_all(conn, "reconcile_runs_past_deadline", {"limit": limit}, RunRow)


async def flag_stuck_runs(conn: Conn, *, grace: timedelta, limit: int) -> list[dict[str, Any]]:
    return await fetch_dicts(conn, "reconcile_flag_stuck_runs", {"grace": grace, "limit": limit})


async def stalled_steps(conn: Conn, *, grace: timedelta, limit: int) -> list[StepRow]:
    return await fetch_all(conn, "reconcile_stalled_steps", {"grace": grace, "limit": limit},
                           StepRow)


async def retry_step(conn: Conn, step: StepRow) -> StepRow | None:
    return await fetch_one(conn, "reconcile_retry_step", {
        "tenant_id": step.tenant_id, "run_id": step.run_id, "step_id": step.step_id}, StepRow)


async def unclaimed_jobs(conn: Conn, *, timeout: timedelta, limit: int,
                         lookback_s: float | None = None) -> list[JobRow]:
    """Claimable jobs past ``timeout`` unclaimed, marked reported; only those that passed
    it within ``lookback_s`` seconds (None: ever)."""
    return await fetch_all(conn, "reconcile_unclaimed_jobs", {
        "timeout": timeout, "limit": limit,
        "lookback": None if lookback_s is None else timedelta(seconds=lookback_s)}, JobRow)
