"""Typed wrappers for sql/queries/dispatch_plans.sql: the job steps a worker's completion
may dispatch itself (docs/design.md#dispatch-in-the-completion)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.store.connection import Conn, execute, json_rows, jsonb


@dataclass(frozen=True)
class NewPlan:
    step_id: str
    rule: str | None
    reason: str
    input: dict[str, Any] | None  # None: the job takes the run's input


async def insert(conn: Conn, *, tenant_id: str, workflow_id: str, workflow_version: str,
                 snapshot_hash: str, plans: Sequence[NewPlan], created_by: str) -> None:
    await execute(conn, "dispatch_plans_insert", {
        "tenant_id": tenant_id, "workflow_id": workflow_id,
        "workflow_version": workflow_version, "snapshot_hash": snapshot_hash,
        "plans": json_rows(plans), "created_by": created_by})



@dataclass(frozen=True)
class StartPlan:
    """What a start of a workflow version writes under a snapshot
    (sql/schema/63_start_plans.sql): JSON-able rows, in their order."""

    timeout_ms: int | None
    steps: list[dict[str, Any]]
    submits: list[dict[str, Any]]  # {step_id, rule, reason}
    roots: list[dict[str, Any]]  # {step_id, topic, priority, timeout_ms, input, rule, reason}


async def insert_start(conn: Conn, *, tenant_id: str, workflow_id: str, workflow_version: str,
                       snapshot_hash: str, plan: StartPlan, created_by: str) -> None:
    await execute(conn, "start_plans_insert", {
        "tenant_id": tenant_id, "workflow_id": workflow_id,
        "workflow_version": workflow_version, "snapshot_hash": snapshot_hash,
        "timeout_ms": plan.timeout_ms, "steps": jsonb(plan.steps),
        "submits": jsonb(plan.submits), "roots": jsonb(plan.roots), "created_by": created_by})
