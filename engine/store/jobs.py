"""Typed wrappers for sql/queries/jobs.sql."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from engine.core.enums import FINAL_JOB, JobStatus, Outcome
from engine.core.errors import InvalidTransition
from engine.core.states import JOB_TRANSITIONS
from engine.store.connection import (
    Conn,
    execute,
    fetch_all,
    fetch_one,
    fetch_value,
    json_rows,
    jsonb,
    jsonb_text,
)
from engine.store.records import ClaimedJob, JobRow, RunKey, run_key_params

_NO_GATES: dict[str, Any] = {"concurrency_key": "", "concurrency_limit": None,
                             "rate_key": "", "rate_limit": None, "rate_per_ms": None}


async def insert(conn: Conn, *, tenant_id: str, run_id: UUID, step_id: str, attempt: int,
                 topic: str, status: JobStatus, priority: int, input: Any, upstream: Any,
                 constraints: Any, timeout_ms: int | None, available_at: datetime | None,
                 policy_snapshot_hash: str | None, traceparent: str | None = None,
                 item_index: int | None = None,
                 gates: Mapping[str, Any] | None = None) -> JobRow:
    """``gates``: the flow control columns (concurrency_key, …; engine.scheduling.gates)."""
    g = {**_NO_GATES, **(gates or {})}
    row = await fetch_one(conn, "job_insert", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id, "attempt": attempt,
        "topic": topic, "status": status, "priority": priority, "input": jsonb(input),
        "upstream": jsonb(upstream), "constraints": jsonb(constraints),
        "timeout_ms": timeout_ms, "available_at": available_at,
        "policy_snapshot_hash": policy_snapshot_hash, "traceparent": traceparent,
        "item_index": item_index, **g}, JobRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    return row


async def announce(conn: Conn, topics: Iterable[str]) -> None:
    names = sorted(set(topics))
    if names:
        await execute(conn, "jobs_announce", {"topics": names})


async def claim(conn: Conn, *, topics: list[str], worker: str, max_jobs: int,
                lease: timedelta) -> list[ClaimedJob]:
    return await fetch_all(conn, "jobs_claim", {
        "topics": topics, "worker": worker, "max_jobs": max_jobs, "lease": lease}, ClaimedJob)


async def heartbeat(conn: Conn, *, job_id: str, lease_token: UUID, extend: timedelta,
                    checkpoint: Any = None) -> datetime:
    expires: datetime = await fetch_value(conn, "job_heartbeat", {
        "job_id": job_id, "lease_token": lease_token, "extend": extend,
        "checkpoint": None if checkpoint is None else jsonb(checkpoint)})
    return expires


async def complete(conn: Conn, *, job_id: str, lease_token: UUID, result: Any) -> None:
    await execute(conn, "job_complete", {
        "job_id": job_id, "lease_token": lease_token, "result": jsonb(result)})


def encode_result(value: Any) -> str:
    """A job's result as the JSON text its completion stores. Raises TypeError or
    ValueError for what JSON cannot hold: a set, an object, NaN or an infinity (json.dumps
    would write NaN, which the database refuses, and with it a worker's whole batch)."""
    return json.dumps(value, allow_nan=False)


@dataclass(frozen=True)
class Completion:
    job_id: str
    lease_token: UUID
    result_json: str  # encoded once, by encode_result; sent as it is

    @classmethod
    def of(cls, job_id: str, lease_token: UUID, value: Any) -> Completion:
        return cls(job_id, lease_token, encode_result(value))


@dataclass(frozen=True)
class CompletionOutcome:
    job_id: str
    outcome: Outcome


async def complete_many(conn: Conn, batch: Sequence[Completion]) -> dict[str, Outcome]:
    """Completes a batch in one statement; each job's outcome by its id."""
    rows = await fetch_all(conn, "jobs_complete_many", {
        "job_ids": [c.job_id for c in batch], "lease_tokens": [c.lease_token for c in batch],
        "results": [jsonb_text(c.result_json) for c in batch]}, CompletionOutcome)
    return {row.job_id: Outcome(row.outcome) for row in rows}


async def fail(conn: Conn, *, job_id: str, lease_token: UUID, error: Any,
               retryable: bool) -> None:
    await execute(conn, "job_fail", {
        "job_id": job_id, "lease_token": lease_token, "error": jsonb(error),
        "retryable": retryable})


async def reap_expired(conn: Conn, limit: int, lookback_s: float | None = None) -> int:
    """Leases that expired within ``lookback_s`` seconds (None: ever) are reaped."""
    reaped: int = await fetch_value(conn, "jobs_reap_expired", {
        "limit": limit,
        "lookback": None if lookback_s is None else timedelta(seconds=lookback_s)})
    return reaped


async def advance_claim_marks(conn: Conn) -> int:
    moved: int = await fetch_value(conn, "jobs_advance_claim_marks", {})
    return moved


async def get(conn: Conn, tenant_id: str, job_id: str) -> JobRow | None:
    return await fetch_one(conn, "job_get", {"tenant_id": tenant_id, "job_id": job_id}, JobRow)


async def of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[JobRow]:
    return await fetch_all(conn, "jobs_of_run", {"tenant_id": tenant_id, "run_id": run_id},
                           JobRow)


async def transition(conn: Conn, job: JobRow, to: JobStatus, *, snapshot_hash: str | None = None,
                     constraints: Any = None, timeout_ms: int | None = None,
                     error: Any = None) -> JobRow | None:
    """Moves an unclaimed job from the status it had in ``job``; None if it moved meanwhile."""
    if to not in JOB_TRANSITIONS.get(job.status, frozenset()):
        raise InvalidTransition(f"job {job.job_id} cannot move from {job.status} to {to}")
    return await fetch_one(conn, "job_transition", {
        "tenant_id": job.tenant_id, "job_id": job.job_id, "from_status": job.status,
        "to_status": to, "final": to in FINAL_JOB, "snapshot_hash": snapshot_hash,
        "constraints": None if constraints is None else jsonb(constraints),
        "timeout_ms": timeout_ms, "error": None if error is None else jsonb(error)}, JobRow)


async def lock(conn: Conn, tenant_id: str, job_id: str) -> JobRow | None:
    return await fetch_one(conn, "job_lock", {"tenant_id": tenant_id, "job_id": job_id},
                           JobRow)


async def lock_open_of_run(conn: Conn, tenant_id: str, run_id: UUID, *,
                           nowait: bool = False) -> list[JobRow]:
    name = "jobs_lock_open_of_run" + ("_nowait" if nowait else "")
    return await fetch_all(conn, name, {"tenant_id": tenant_id, "run_id": run_id}, JobRow)


async def end(conn: Conn, job: JobRow, to: JobStatus, error: Any) -> JobRow | None:
    """Ends an unfinished job because its run ended; None if it moved meanwhile."""
    if to not in JOB_TRANSITIONS.get(job.status, frozenset()):
        raise InvalidTransition(f"job {job.job_id} cannot move from {job.status} to {to}")
    return await fetch_one(conn, "job_end", {
        "tenant_id": job.tenant_id, "job_id": job.job_id, "from_status": job.status,
        "to_status": to, "error": jsonb(error)}, JobRow)


async def lock_new_of_run(conn: Conn, tenant_id: str, run_id: UUID) -> list[JobRow]:
    return await fetch_all(conn, "jobs_lock_new_of_run", {"tenant_id": tenant_id,
                                                          "run_id": run_id}, JobRow)


async def page(conn: Conn, tenant_id: str, *, status: JobStatus | None, topic: str | None,
               before: tuple[datetime, str] | None, limit: int) -> list[JobRow]:
    return await fetch_all(conn, "jobs_page", {
        "tenant_id": tenant_id, "status": status, "topic": topic,
        "before_created": before[0] if before else None,
        "before_id": before[1] if before else None, "limit": limit}, JobRow)


async def release(conn: Conn, *, job_id: str, lease_token: UUID, reason: str) -> None:
    await execute(conn, "job_release", {"job_id": job_id, "lease_token": lease_token,
                                        "reason": reason})


@dataclass(frozen=True)
class NewJob:
    """A claimable (pending) attempt that a scheduler pass dispatches."""

    tenant_id: str
    run_id: UUID
    step_id: str
    attempt: int
    topic: str
    priority: int
    input: Any
    upstream: Any
    constraints: Any
    timeout_ms: int | None
    available_at: datetime | None
    policy_snapshot_hash: str | None
    traceparent: str | None = None  # W3C; only when traces are on
    item_index: int | None = None  # the for_each item of the attempt
    # flow control gates ('' = none), docs/workflows.md#concurrency-and-rate-limits
    concurrency_key: str = ""
    concurrency_limit: int | None = None
    rate_key: str = ""
    rate_limit: int | None = None
    rate_per_ms: int | None = None


async def insert_many(conn: Conn, jobs: Sequence[NewJob]) -> None:
    if jobs:
        await execute(conn, "jobs_insert_many", {"jobs": json_rows(jobs)})


async def drifted_of_runs(conn: Conn, keys: Sequence[RunKey]) -> list[JobRow]:
    return await fetch_all(conn, "jobs_drifted_of_runs", run_key_params(keys), JobRow)


async def lock_open_of_step(conn: Conn, tenant_id: str, run_id: UUID,
                            step_id: str) -> list[JobRow]:
    """Busy (NOWAIT) if a worker is writing one of them right now."""
    return await fetch_all(conn, "jobs_lock_open_of_step", {
        "tenant_id": tenant_id, "run_id": run_id, "step_id": step_id}, JobRow)
