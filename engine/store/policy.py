"""Typed wrappers for sql/queries/policy.sql."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.store.connection import (
    Conn,
    execute,
    fetch_all,
    fetch_dicts,
    fetch_one,
    json_rows,
    jsonb,
)
from engine.store.records import (
    PolicyActivationRow,
    PolicyActiveRow,
    PolicyDecisionRow,
    PolicySnapshotRow,
)


async def insert_snapshot(conn: Conn, *, tenant_id: str, snapshot_hash: str,
                          bundle: dict[str, Any], source: str,
                          created_by: str) -> PolicySnapshotRow | None:
    return await fetch_one(conn, "policy_snapshot_insert", {
        "tenant_id": tenant_id, "snapshot_hash": snapshot_hash, "bundle": jsonb(bundle),
        "source": source, "created_by": created_by}, PolicySnapshotRow)


async def get_snapshot(conn: Conn, tenant_id: str, snapshot_hash: str) -> PolicySnapshotRow | None:
    return await fetch_one(conn, "policy_snapshot_get", {
        "tenant_id": tenant_id, "snapshot_hash": snapshot_hash}, PolicySnapshotRow)


async def list_snapshots(conn: Conn, tenant_id: str, limit: int) -> list[PolicySnapshotRow]:
    return await fetch_all(conn, "policy_snapshots_list", {
        "tenant_id": tenant_id, "limit": limit}, PolicySnapshotRow)


async def get_active(conn: Conn, tenant_id: str) -> PolicyActiveRow | None:
    return await fetch_one(conn, "policy_active_get", {"tenant_id": tenant_id}, PolicyActiveRow)


async def lock_active(conn: Conn, tenant_id: str) -> PolicyActiveRow | None:
    return await fetch_one(conn, "policy_active_lock", {"tenant_id": tenant_id}, PolicyActiveRow)


async def set_active(conn: Conn, *, tenant_id: str, snapshot_hash: str,
                     activated_by: str) -> None:
    await execute(conn, "policy_active_set", {
        "tenant_id": tenant_id, "snapshot_hash": snapshot_hash, "activated_by": activated_by})


async def insert_activation(conn: Conn, *, tenant_id: str, snapshot_hash: str,
                            previous_hash: str | None, activated_by: str) -> PolicyActivationRow:
    row = await fetch_one(conn, "policy_activation_insert", {
        "tenant_id": tenant_id, "snapshot_hash": snapshot_hash, "previous_hash": previous_hash,
        "activated_by": activated_by}, PolicyActivationRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    return row


async def active_readers(conn: Conn) -> list[str]:
    """The other transactions holding a lock on warden.policy_active now."""
    [row] = await fetch_dicts(conn, "policy_active_readers", {})
    return list(row["readers"])


async def readers_open(conn: Conn, readers: list[str]) -> int:
    [row] = await fetch_dicts(conn, "policy_readers_open", {"readers": readers})
    return int(row["open"])


async def flag_drifted_runs(conn: Conn, tenant_id: str) -> int:
    [row] = await fetch_dicts(conn, "policy_flag_drifted_runs", {"tenant_id": tenant_id})
    return int(row["flagged"])


async def insert_decision(conn: Conn, *, tenant_id: str, stage: str, snapshot_hash: str | None,
                          rule: str | None, decision: str, reason: str, constraints: Any,
                          run_id: UUID, step_id: str, job_id: str | None) -> PolicyDecisionRow:
    row = await fetch_one(conn, "policy_decision_insert", {
        "tenant_id": tenant_id, "stage": stage, "snapshot_hash": snapshot_hash, "rule": rule,
        "decision": decision, "reason": reason, "constraints": jsonb(constraints),
        "run_id": run_id, "step_id": step_id, "job_id": job_id}, PolicyDecisionRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    return row


async def decisions_of_job(conn: Conn, tenant_id: str, job_id: str) -> list[PolicyDecisionRow]:
    return await fetch_all(conn, "policy_decisions_of_job", {
        "tenant_id": tenant_id, "job_id": job_id}, PolicyDecisionRow)


async def decisions_of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[PolicyDecisionRow]:
    return await fetch_all(conn, "policy_decisions_of_run", {
        "tenant_id": tenant_id, "run_id": run_id}, PolicyDecisionRow)


DecisionKey = tuple[UUID, str, str | None]  # run, step, job (None at submit)


@dataclass(frozen=True)
class NewDecision:
    """A decision recorded with others in one statement."""

    tenant_id: str
    stage: str
    snapshot_hash: str | None
    rule: str | None
    decision: str
    reason: str
    constraints: Any
    run_id: UUID
    step_id: str
    job_id: str | None


async def insert_decisions(conn: Conn,
                           decisions: Sequence[NewDecision]) -> dict[DecisionKey, int]:
    """Records the decisions; each one's decision_id by (run, step, job)."""
    if not decisions:
        return {}
    rows = await fetch_dicts(conn, "policy_decisions_insert_many",
                             {"decisions": json_rows(decisions)})
    return {(row["run_id"], row["step_id"], row["job_id"]): row["decision_id"] for row in rows}
