"""Typed wrappers for sql/queries/runs.sql."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from engine.core import ids
from engine.core.enums import RunStatus
from engine.core.errors import InvalidTransition
from engine.core.states import RUN_TRANSITIONS
from engine.store.connection import (
    Conn,
    execute,
    fetch_all,
    fetch_one,
    fetch_value,
    jsonb,
)
from engine.store.records import EndedRun, RunKey, RunRow, run_key_params


@dataclass(frozen=True)
class Parent:
    """Where a child run comes from (docs/workflows.md#sub-workflows)."""

    run_id: UUID
    step_id: str
    item_index: int | None
    attempt: int
    depth: int  # the child's


async def insert(conn: Conn, *, tenant_id: str, workflow_id: str, workflow_version: str,
                 input: Any, idempotency_key: str | None, request_digest: str,
                 rerun_of: UUID | None, created_by: str, timeout_ms: int | None,
                 pins: Any = None, parent: Parent | None = None,
                 priority: int = 5) -> RunRow | None:
    return await fetch_one(conn, "run_insert", {
        "tenant_id": tenant_id, "run_id": ids.new_run_id(), "workflow_id": workflow_id,
        "workflow_version": workflow_version, "input": jsonb(input),
        "idempotency_key": idempotency_key, "request_digest": request_digest,
        "rerun_of": rerun_of, "created_by": created_by, "timeout_ms": timeout_ms,
        "pins": jsonb(pins or {}),
        "parent_run_id": parent.run_id if parent else None,
        "parent_step_id": parent.step_id if parent else None,
        "parent_item_index": parent.item_index if parent else None,
        "parent_attempt": parent.attempt if parent else None,
        "depth": parent.depth if parent else 0, "priority": priority}, RunRow)


async def lock_nowait(conn: Conn, tenant_id: str, run_id: UUID) -> RunRow | None:
    """Busy if another transaction holds the run."""
    return await fetch_one(conn, "run_lock_nowait", {"tenant_id": tenant_id, "run_id": run_id},
                           RunRow)


async def latest_children_of_runs(conn: Conn, keys: Sequence[RunKey]) -> list[RunRow]:
    return await fetch_all(conn, "runs_latest_children_of_runs", run_key_params(keys), RunRow)


async def children_of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[RunRow]:
    return await fetch_all(conn, "runs_children_of_run", {"tenant_id": tenant_id,
                                                          "run_id": run_id}, RunRow)


@dataclass(frozen=True)
class NewRun:
    """One run of a batch start (runs_insert_many); the caller picks the run id."""

    run_id: UUID
    version: str
    input: Any
    idempotency_key: str | None
    request_digest: str
    timeout_ms: int | None
    priority: int = 5  # docs/workflows.md#priority
    pins: Any = None  # the child versions of its workflow steps (engine/runs/children.py)


async def insert_many(conn: Conn, *, tenant_id: str, workflow_id: str, created_by: str,
                      runs: Sequence[NewRun]) -> list[RunRow]:
    """Inserts the runs in one statement; a run whose idempotency key is taken is left out
    of the rows returned (the caller looks its key up)."""
    if not runs:
        return []
    return await fetch_all(conn, "runs_insert_many", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "created_by": created_by,
        "run_ids": [r.run_id for r in runs], "versions": [r.version for r in runs],
        "inputs": [jsonb(r.input) for r in runs],
        "idempotency_keys": [r.idempotency_key for r in runs],
        "digests": [r.request_digest for r in runs],
        "timeout_ms": [r.timeout_ms for r in runs],
        "priorities": [r.priority for r in runs],
        "pins": [jsonb(r.pins or {}) for r in runs]}, RunRow)


async def start_planned(conn: Conn, *, tenant_id: str, workflow_id: str,
                        version: str | None, run: NewRun, created_by: str,
                        started_by_event: Mapping[str, Any] | None) -> RunRow | None:
    """One run started, judged and dispatched in one call where a start plan covers it
    (warden.start_planned_run); None: nothing was written (no plan, or the key is taken).
    ``run.version`` is not read: the function resolves ``version`` itself."""
    return await fetch_one(conn, "runs_start_planned", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "version": version,
        "run_id": run.run_id, "input": jsonb(run.input),
        "idempotency_key": run.idempotency_key, "digest": run.request_digest,
        "priority": run.priority, "created_by": created_by,
        "started_by_event": None if started_by_event is None else jsonb(dict(started_by_event))},
        RunRow)


async def by_idempotency_keys(conn: Conn, tenant_id: str, workflow_id: str,
                              keys: Sequence[str]) -> list[RunRow]:
    if not keys:
        return []
    return await fetch_all(conn, "runs_by_idempotency_keys", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "idempotency_keys": list(keys)},
        RunRow)


async def notify_schedulers(conn: Conn) -> None:
    await execute(conn, "scheduler_notify", {})


async def by_idempotency_key(conn: Conn, tenant_id: str, workflow_id: str,
                             key: str) -> RunRow | None:
    return await fetch_one(conn, "run_by_idempotency_key", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "idempotency_key": key}, RunRow)


async def get(conn: Conn, tenant_id: str, run_id: UUID) -> RunRow | None:
    return await fetch_one(conn, "run_get", {"tenant_id": tenant_id, "run_id": run_id}, RunRow)


async def get_any_tenant(conn: Conn, run_id: UUID) -> RunRow | None:
    return await fetch_one(conn, "run_get_any_tenant", {"run_id": run_id}, RunRow)


@dataclass(frozen=True)
class ChainRun:
    """One run of a rerun chain and who started it."""

    run_id: UUID
    rerun_of: UUID | None
    created_by: str
    depth: int  # 0: the run asked about; 1: the run it reruns; and so on


async def rerun_chain(conn: Conn, tenant_id: str, run_id: UUID) -> list[ChainRun]:
    """The run and every run it reruns, back to the original, nearest first."""
    return await fetch_all(conn, "run_rerun_chain", {"tenant_id": tenant_id, "run_id": run_id},
                           ChainRun)


async def page(conn: Conn, tenant_id: str, *, filters: Mapping[str, Any],
               before: tuple[datetime, UUID] | None, limit: int) -> list[RunRow]:
    """``filters``: status, denied_by, workflow_id, id_low/id_high, created_after,
    created_before, idempotency_key, rerun_of, input_match (each None for no filter)."""
    return await fetch_all(conn, "run_list", {
        "tenant_id": tenant_id, **filters,
        "input_match": None if filters["input_match"] is None else jsonb(filters["input_match"]),
        "before_created": before[0] if before else None,
        "before_run": before[1] if before else None, "limit": limit}, RunRow)


async def by_id_prefix(conn: Conn, tenant_id: str | None, id_low: UUID, id_high: UUID,
                       limit: int) -> list[RunRow]:
    return await fetch_all(conn, "runs_by_id_prefix", {
        "tenant_id": tenant_id, "id_low": id_low, "id_high": id_high, "limit": limit}, RunRow)


async def lock_for_scheduling(conn: Conn, limit: int, skip: Sequence[RunKey] = (), *,
                              floor: int = 0) -> list[RunRow]:
    """Up to ``limit`` flagged runs, flagged at or after ``floor`` (0: all of them)."""
    return await fetch_all(conn, "runs_lock_for_scheduling",
                           {"limit": limit, "floor": floor, **run_key_params(skip, "skip_")},
                           RunRow)


async def scheduling_floor(conn: Conn, floor: int) -> int | None:
    """The next floor from ``floor`` (docs/design.md#scheduling-floors); None: keep it."""
    found = await fetch_value(conn, "scheduling_floor", {"floor": floor})
    return None if found is None else int(found)


async def observe_ends(conn: Conn, limit: int,
                       lookback_s: float | None = None) -> list[EndedRun]:
    """Up to ``limit`` runs ended by a worker's completion within ``lookback_s`` seconds
    (None: ever) and not yet observed, taken off warden.run_ends (commits with the
    caller's statement)."""
    return await fetch_all(conn, "runs_observe_ends", {
        "limit": limit,
        "lookback": None if lookback_s is None else timedelta(seconds=lookback_s)},
        EndedRun)


async def lock(conn: Conn, tenant_id: str, run_id: UUID) -> RunRow | None:
    return await fetch_one(conn, "run_lock", {"tenant_id": tenant_id, "run_id": run_id}, RunRow)


async def transition(conn: Conn, run: RunRow, to: RunStatus, *, output: Any = None,
                     error: Any = None) -> RunRow | None:
    if to not in RUN_TRANSITIONS.get(run.status, frozenset()):
        raise InvalidTransition(f"run {run.run_id} cannot move from {run.status} to {to}")
    return await fetch_one(conn, "run_transition", {
        "tenant_id": run.tenant_id, "run_id": run.run_id, "from_status": run.status,
        "to_status": to, "final": to.is_final,
        "output": None if output is None else jsonb(output),
        "error": None if error is None else jsonb(error)}, RunRow)


async def mark_scheduled(conn: Conn, tenant_id: str, run_id: UUID) -> None:
    await execute(conn, "run_mark_scheduled", {"tenant_id": tenant_id, "run_id": run_id})


async def wake_parent(conn: Conn, tenant_id: str, run_id: UUID) -> None:
    await execute(conn, "run_wake_parent", {"tenant_id": tenant_id, "run_id": run_id})


async def wake(conn: Conn, tenant_id: str, run_id: UUID) -> None:
    await execute(conn, "run_wake", {"tenant_id": tenant_id, "run_id": run_id})


async def lock_for_scheduling_ids(conn: Conn, keys: Sequence[RunKey]) -> list[RunRow]:
    return await fetch_all(conn, "runs_lock_for_scheduling_ids", run_key_params(keys), RunRow)


@dataclass(frozen=True)
class RunChange:
    """One run's status change in a scheduler pass, from the status the pass saw."""

    tenant_id: str
    run_id: UUID
    from_status: RunStatus
    to_status: RunStatus
    output: Any
    error: Any


async def end_pass(conn: Conn, keys: Sequence[RunKey],
                   changes: Mapping[RunKey, RunChange]) -> int:
    """Clears the scheduler flag of every run of a pass and applies the status changes it
    decided; returns how many runs matched (all of them unless one moved meanwhile)."""
    if not keys:
        return 0
    found = [changes.get(key) for key in keys]
    return await execute(conn, "runs_end_pass", {
        **run_key_params(keys),
        "from_statuses": [c.from_status.value if c else None for c in found],
        "to_statuses": [c.to_status.value if c else None for c in found],
        "finals": [c.to_status.is_final if c else False for c in found],
        "outputs": [jsonb(c.output) if c and c.output is not None else None for c in found],
        "errors": [jsonb(c.error) if c and c.error is not None else None for c in found]})


async def transaction_now(conn: Conn) -> datetime:
    now: datetime = await fetch_value(conn, "transaction_now", {})
    return now
