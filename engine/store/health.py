"""Typed wrappers for sql/queries/health.sql."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from engine.store.connection import Conn, fetch_dicts, fetch_value


async def ping(conn: Conn) -> bool:
    return bool(await fetch_value(conn, "health_ping", {}))


async def jobs_by_state(conn: Conn) -> list[dict[str, Any]]:
    return await fetch_dicts(conn, "metrics_jobs_by_state", {})


async def runs_by_status(conn: Conn) -> list[dict[str, Any]]:
    return await fetch_dicts(conn, "metrics_runs_by_status", {})


async def approvals_pending(conn: Conn) -> dict[str, Any]:
    [row] = await fetch_dicts(conn, "metrics_approvals_pending", {})
    return row


async def unclaimed(conn: Conn, timeout: timedelta) -> list[dict[str, Any]]:
    return await fetch_dicts(conn, "metrics_unclaimed", {"timeout": timeout})


async def table_health(conn: Conn) -> list[dict[str, Any]]:
    return await fetch_dicts(conn, "metrics_table_health", {})


async def oldest_transaction_s(conn: Conn) -> float:
    return float(await fetch_value(conn, "metrics_oldest_transaction", {}))
