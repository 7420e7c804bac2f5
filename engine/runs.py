"""Starting runs (idempotently) and reading them with their steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from engine.canonical import sha256_hex
from engine.definitions import WorkflowDef
from engine.errors import IdempotencyConflict, InvalidInput, NotFound
from engine.store import Conn, Database
from engine.store import approvals as approvals_q
from engine.store import jobs as jobs_q
from engine.store import runs as q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import ApprovalRow, JobRow, RunRow, StepRow
from engine.workflows import DefinitionCache, resolve

MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class StartedRun:
    run: RunRow
    replayed: bool  # True: the idempotency key had already started this run


@dataclass(frozen=True)
class RunDetail:
    run: RunRow
    steps: list[StepRow]  # in the definition's topological order
    jobs: list[JobRow]
    approvals: list[ApprovalRow]


def _step_rows(workflow: WorkflowDef) -> list[dict[str, Any]]:
    return [{
        "step_id": step.id, "type": step.type.value, "depends_on": list(step.depends_on),
        "topic": step.topic, "max_attempts": step.retries.max_attempts,
        "backoff_ms": step.retries.backoff_ms, "max_backoff_ms": step.retries.max_backoff_ms,
        "multiplier": step.retries.multiplier, "jitter": step.retries.jitter,
        "timeout_ms": step.timeout_ms, "priority": step.priority,
    } for step in workflow.steps.values()]


async def start(db: Database, definitions: DefinitionCache, *, tenant_id: str, workflow_id: str,
                input: Any, created_by: str, idempotency_key: str | None = None,
                version: str | None = None) -> StartedRun:
    """Creates a run pinned to one workflow version, or replays the run an idempotency key
    already created. The unique constraint runs_idempotency arbitrates concurrent starts."""
    if not isinstance(input, dict):
        raise InvalidInput("input", "must be a JSON object")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidInput("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    # The digest covers the request as sent (not the resolved version), so a replay after a
    # newer version was stored still returns the run the key created.
    digest = sha256_hex({"input": input, "version": version})
    async with db.transaction() as conn:
        row = await resolve(conn, tenant_id, workflow_id, version)
        workflow = await definitions.get(conn, tenant_id, workflow_id, row.version)
        run = await q.insert(conn, tenant_id=tenant_id, workflow_id=workflow_id,
                             workflow_version=row.version, input=input,
                             idempotency_key=idempotency_key, request_digest=digest,
                             rerun_of=None, created_by=created_by, timeout_ms=workflow.timeout_ms)
        if run is None:
            assert idempotency_key is not None  # only the idempotency constraint can conflict
            existing = await q.by_idempotency_key(conn, tenant_id, workflow_id, idempotency_key)
            assert existing is not None
            if existing.request_digest != digest:
                raise IdempotencyConflict(
                    f"Idempotency-Key {idempotency_key!r} was already used for workflow "
                    f"{workflow_id!r} with a different request body")
            return StartedRun(existing, replayed=True)
        await steps_q.insert_all(conn, tenant_id, run.run_id, _step_rows(workflow))
        await timeline_q.append(conn, tenant_id, run.run_id, "run.created", actor=created_by,
                                data={"workflow_id": workflow_id, "version": row.version,
                                      "idempotency_key": idempotency_key})
        await q.wake(conn, tenant_id, run.run_id)
    return StartedRun(run, replayed=False)


async def get_row(conn: Conn, tenant_id: str | None, run_id: UUID) -> RunRow:
    """A run of the tenant (None: any tenant, for host-side operator tools)."""
    run = (await q.get_any_tenant(conn, run_id) if tenant_id is None
           else await q.get(conn, tenant_id, run_id))
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


async def detail(db: Database, definitions: DefinitionCache, tenant_id: str | None,
                 run_id: UUID) -> RunDetail:
    async with db.transaction() as conn:
        run = await get_row(conn, tenant_id, run_id)
        workflow = await definitions.get(conn, run.tenant_id, run.workflow_id,
                                         run.workflow_version)
        by_id = {s.step_id: s for s in await steps_q.of_run(conn, run.tenant_id, run_id)}
        jobs = await jobs_q.of_run(conn, run.tenant_id, run_id)
        approvals = await approvals_q.of_run(conn, run.tenant_id, run_id)
    return RunDetail(run, [by_id[s] for s in workflow.steps if s in by_id], jobs, approvals)
