"""Typed wrappers for sql/queries/approvals.sql."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from engine.core.enums import ApprovalStatus
from engine.core.errors import InvalidTransition
from engine.core.states import APPROVAL_TRANSITIONS
from engine.store.connection import Conn, fetch_all, fetch_dicts, fetch_one
from engine.store.records import ApprovalRow, JobRow, RunKey, run_key_params


async def insert(conn: Conn, *, tenant_id: str, run_id: UUID, step_id: str, job_id: str | None,
                 kind: str, policy_snapshot_hash: str | None, job_hash: str | None,
                 requested_by: str, expires_in_ms: int | None) -> ApprovalRow:
    row = await fetch_one(conn, "approval_insert", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id, "job_id": job_id,
        "kind": kind, "policy_snapshot_hash": policy_snapshot_hash, "job_hash": job_hash,
        "requested_by": requested_by, "expires_in_ms": expires_in_ms}, ApprovalRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    return row


async def decide(conn: Conn, *, tenant_id: str, approval_id: UUID, to: ApprovalStatus,
                 decided_by: str, reason: str | None) -> ApprovalRow | None:
    _check(approval_id, to)
    return await fetch_one(conn, "approval_decide", {
        "tenant_id": tenant_id, "approval_id": approval_id, "to_status": to,
        "decided_by": decided_by, "reason": reason}, ApprovalRow)


async def get(conn: Conn, tenant_id: str, approval_id: UUID) -> ApprovalRow | None:
    return await fetch_one(conn, "approval_get", {
        "tenant_id": tenant_id, "approval_id": approval_id}, ApprovalRow)


async def get_any_tenant(conn: Conn, approval_id: UUID) -> ApprovalRow | None:
    return await fetch_one(conn, "approval_get_any_tenant", {"approval_id": approval_id},
                           ApprovalRow)


async def page(conn: Conn, *, tenant_id: str | None, status: ApprovalStatus | None,
               after: tuple[datetime, UUID] | None, limit: int) -> list[ApprovalRow]:
    return await fetch_all(conn, "approvals_list", {
        "tenant_id": tenant_id, "status": status,
        "after_requested": after[0] if after else None, "after_id": after[1] if after else None,
        "limit": limit}, ApprovalRow)


async def by_id_prefix(conn: Conn, tenant_id: str | None, id_low: UUID, id_high: UUID,
                       limit: int) -> list[ApprovalRow]:
    return await fetch_all(conn, "approvals_by_id_prefix", {
        "tenant_id": tenant_id, "id_low": id_low, "id_high": id_high, "limit": limit},
        ApprovalRow)


async def context(conn: Conn, keys: Sequence[tuple[str, UUID]]) -> list[dict[str, Any]]:
    """(tenant_id, approval_id) pairs → approval_id, workflow_id, workflow_version,
    run_status, topic (of the held job; None for an approval step)."""
    return await fetch_dicts(conn, "approvals_context", {
        "tenant_ids": [k[0] for k in keys], "approval_ids": [k[1] for k in keys]})


async def of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[ApprovalRow]:
    return await fetch_all(conn, "approvals_of_run", {"tenant_id": tenant_id, "run_id": run_id},
                           ApprovalRow)


async def of_runs(conn: Conn, keys: Sequence[RunKey]) -> list[ApprovalRow]:
    return await fetch_all(conn, "approvals_of_runs", run_key_params(keys), ApprovalRow)


async def expire_due(conn: Conn, limit: int) -> list[ApprovalRow]:
    """Expires due approvals, locking the jobs they hold back first (lock order)."""
    held = await fetch_all(conn, "approvals_due_jobs_lock", {"limit": limit}, JobRow)
    return await fetch_all(conn, "approvals_expire", {
        "limit": limit, "job_tenants": [j.tenant_id for j in held],
        "job_ids": [j.job_id for j in held]}, ApprovalRow)


async def lock_pending_of_step(conn: Conn, tenant_id: str, run_id: UUID,
                               step_id: str) -> ApprovalRow | None:
    return await fetch_one(conn, "approval_pending_of_step_lock", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id}, ApprovalRow)


async def lock_pending_of_job(conn: Conn, tenant_id: str, job_id: str) -> ApprovalRow | None:
    return await fetch_one(conn, "approval_pending_of_job_lock", {
        "tenant_id": tenant_id, "job_id": job_id}, ApprovalRow)


async def close(conn: Conn, approval: ApprovalRow, to: ApprovalStatus,
                reason: str) -> ApprovalRow | None:
    _check(approval.approval_id, to)
    return await fetch_one(conn, "approval_close", {
        "tenant_id": approval.tenant_id, "approval_id": approval.approval_id,
        "to_status": to, "reason": reason}, ApprovalRow)


async def lock_pending_of_run(conn: Conn, tenant_id: str, run_id: UUID, *,
                              nowait: bool = False) -> list[ApprovalRow]:
    name = "approvals_lock_pending_of_run" + ("_nowait" if nowait else "")
    return await fetch_all(conn, name, {
        "tenant_id": tenant_id, "run_id": run_id}, ApprovalRow)


def _check(approval_id: UUID, to: ApprovalStatus) -> None:
    """Only a pending approval is ever decided or closed (approval_decide and approval_close
    name that status in their WHERE clause too)."""
    if to not in APPROVAL_TRANSITIONS[ApprovalStatus.PENDING]:
        raise InvalidTransition(f"approval {approval_id} cannot move from pending to {to}")
