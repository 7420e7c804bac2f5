"""Typed wrappers for sql/queries/steps.sql."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.core.enums import StepStatus
from engine.core.errors import InvalidTransition
from engine.core.states import STEP_TRANSITIONS
from engine.store.connection import Conn, execute, fetch_all, fetch_one, jsonb
from engine.store.records import RunKey, StepRow, run_key_params


async def insert_all(conn: Conn, tenant_id: str, run_id: UUID,
                     steps: list[dict[str, Any]]) -> None:
    await execute(conn, "steps_insert", {
        "tenant_id": tenant_id, "run_id": run_id, "steps": jsonb(steps)})


async def insert_for_runs(conn: Conn, tenant_id: str, run_ids: Sequence[UUID],
                          steps: list[dict[str, Any]]) -> list[StepRow]:
    """The same step rows for each of several new runs of one workflow version."""
    if not run_ids:
        return []
    return await fetch_all(conn, "steps_insert_for_runs", {
        "tenant_id": tenant_id, "run_ids": list(run_ids), "steps": jsonb(steps)}, StepRow)


async def of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[StepRow]:
    return await fetch_all(conn, "steps_of_run", {"tenant_id": tenant_id, "run_id": run_id},
                           StepRow)


async def transition(conn: Conn, step: StepRow, to: StepStatus, *, output: Any = None,
                     error: Any = None) -> StepRow | None:
    return await transition_by_key(conn, step.tenant_id, step.run_id, step.step_id,
                                   step.status, to, output=output, error=error)


async def transition_by_key(conn: Conn, tenant_id: str, run_id: UUID, step_id: str,
                            from_status: StepStatus, to: StepStatus, *, output: Any = None,
                            error: Any = None) -> StepRow | None:
    """Moves a step from ``from_status``; None if it was not in that status any more."""
    if to not in STEP_TRANSITIONS.get(from_status, frozenset()):
        raise InvalidTransition(f"step {step_id} cannot move from {from_status} to {to}")
    return await fetch_one(conn, "step_transition", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id,
        "from_status": from_status, "to_status": to, "final": to.is_final,
        "output": None if output is None else jsonb(output),
        "error": None if error is None else jsonb(error)}, StepRow)


async def start_attempt(conn: Conn, step: StepRow) -> StepRow | None:
    return await fetch_one(conn, "step_start_attempt", {
        "tenant_id": step.tenant_id, "run_id": step.run_id, "step_id": step.step_id,
        "attempts": step.attempts}, StepRow)


async def limit_attempts(conn: Conn, step: StepRow, max_attempts: int) -> StepRow | None:
    return await fetch_one(conn, "step_limit_attempts", {
        "tenant_id": step.tenant_id, "run_id": step.run_id, "step_id": step.step_id,
        "max_attempts": max_attempts}, StepRow)


async def of_runs(conn: Conn, keys: Sequence[RunKey]) -> list[StepRow]:
    return await fetch_all(conn, "steps_of_runs", run_key_params(keys), StepRow)


@dataclass(frozen=True)
class AttemptStart:
    """A dispatched attempt: the step's attempt count as the pass saw it, and the policy's
    max_attempts when it set one."""

    tenant_id: str
    run_id: UUID
    step_id: str
    attempts: int
    max_attempts: int | None


async def start_attempts(conn: Conn, starts: Sequence[AttemptStart]) -> int:
    """Returns how many steps still had the attempt count the pass saw."""
    if not starts:
        return 0
    return await execute(conn, "steps_start_attempts", {
        "tenant_ids": [s.tenant_id for s in starts], "run_ids": [s.run_id for s in starts],
        "step_ids": [s.step_id for s in starts], "attempts": [s.attempts for s in starts],
        "max_attempts": [s.max_attempts for s in starts]})
