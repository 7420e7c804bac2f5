"""Typed wrappers for sql/queries/items.sql: the items of for_each steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.core.enums import StepStatus
from engine.core.errors import InvalidTransition
from engine.core.states import ITEM_TRANSITIONS
from engine.store.connection import Conn, execute, fetch_all, fetch_one, json_rows, jsonb
from engine.store.records import ItemRow, RunKey, run_key_params


async def insert(conn: Conn, *, tenant_id: str, run_id: UUID, step_id: str,
                 items: Sequence[Any], max_attempts: int) -> None:
    await execute(conn, "items_insert", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id,
        "max_attempts": max_attempts,
        "items": jsonb([{"item_index": i, "item": item} for i, item in enumerate(items)])})


async def of_running_steps(conn: Conn, keys: Sequence[RunKey]) -> list[ItemRow]:
    return await fetch_all(conn, "items_of_running_steps", run_key_params(keys), ItemRow)


async def of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[ItemRow]:
    return await fetch_all(conn, "items_of_run", {"tenant_id": tenant_id, "run_id": run_id},
                           ItemRow)


@dataclass(frozen=True)
class ItemStart:
    """A dispatched item attempt: its attempt count as the pass saw it, and the policy's
    max_attempts when it set one."""

    tenant_id: str
    run_id: UUID
    step_id: str
    item_index: int
    attempts: int
    max_attempts: int | None


async def start_attempts(conn: Conn, starts: Sequence[ItemStart]) -> int:
    """Returns how many items still had the attempt count the pass saw."""
    if not starts:
        return 0
    return await execute(conn, "items_start_attempts", {"starts": json_rows(starts)})


async def transition(conn: Conn, item: ItemRow, to: StepStatus, *, attempted: bool = False,
                     output: Any = None, error: Any = None) -> ItemRow | None:
    """Moves an item from the status it had in ``item``; None if it moved meanwhile.
    ``attempted`` counts an attempt that ended at dispatch (denied, or its input failed)."""
    if to not in ITEM_TRANSITIONS.get(item.status, frozenset()):
        raise InvalidTransition(f"item {item.step_id}[{item.item_index}] cannot move from "
                                f"{item.status} to {to}")
    return await fetch_one(conn, "item_transition", {
        "tenant_id": item.tenant_id, "run_id": item.run_id, "step_id": item.step_id,
        "item_index": item.item_index, "from_status": item.status, "to_status": to,
        "attempted": int(attempted), "final": to.is_final,
        "output": None if output is None else jsonb(output),
        "error": None if error is None else jsonb(error)}, ItemRow)


async def end_open(conn: Conn, tenant_id: str, run_id: UUID, step_id: str | None, *,
                   unstarted: StepStatus, started: StepStatus, error: Any) -> list[ItemRow]:
    """Ends the unfinished items of a run (or of one of its steps)."""
    return await fetch_all(conn, "items_end_open", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id,
        "unstarted": unstarted, "started": started, "error": jsonb(error)}, ItemRow)


async def transition_by_key(conn: Conn, tenant_id: str, run_id: UUID, step_id: str,
                            item_index: int, from_status: StepStatus, to: StepStatus, *,
                            error: Any = None) -> ItemRow | None:
    """Moves an item from ``from_status``; None if it was not in that status any more."""
    if to not in ITEM_TRANSITIONS.get(from_status, frozenset()):
        raise InvalidTransition(f"item {step_id}[{item_index}] cannot move from "
                                f"{from_status} to {to}")
    return await fetch_one(conn, "item_transition_by_key", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id,
        "item_index": item_index, "from_status": from_status, "to_status": to,
        "final": to.is_final, "error": None if error is None else jsonb(error)}, ItemRow)
