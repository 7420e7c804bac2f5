"""Deciding approvals: approve or reject, once, by nobody who started a run of the rerun
chain (the run itself, the run it reruns, and so on back to the original)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.core import ids
from engine.core.enums import ApprovalStatus, JobStatus, StepStatus
from engine.core.errors import Conflict, Forbidden, InvalidInput, InvalidTransition, NotFound
from engine.store import Conn, Database
from engine.store import approvals as q
from engine.store import items as items_q
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import ApprovalRow

if TYPE_CHECKING:
    from engine.definitions.workflows import DefinitionCache


async def get(conn: Conn, tenant_id: str | None, approval_id: UUID) -> ApprovalRow:
    """An approval of the tenant (None: any tenant, for host-side operator tools)."""
    row = (await q.get_any_tenant(conn, approval_id) if tenant_id is None
           else await q.get(conn, tenant_id, approval_id))
    if row is None:
        raise NotFound(f"approval {approval_id} not found")
    return row


async def decide(db: Database, *, tenant_id: str | None, approval_id: UUID, approve: bool,
                 principal: str, reason: str | None = None,
                 job_hash: str | None = None) -> ApprovalRow:
    """Approves or rejects a pending approval; the first decision stands.

    Rejection ends the step ``denied`` (never failed). ``job_hash``, when given, must equal
    the hash the approval is bound to: the approver approves exactly what will run.
    """
    if not approve and not (reason or "").strip():
        # the audit trail says why a run was stopped, as the page has always required
        raise InvalidInput("reason", "a rejection needs a reason (why the run must not go on)")
    to = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    async with db.transaction() as conn:
        current = await get(conn, tenant_id, approval_id)
        if job_hash is not None and job_hash != current.job_hash:
            raise Conflict(f"approval {approval_id} is bound to job hash {current.job_hash}, "
                           f"not {job_hash}: what would run has changed since it was shown")
        if principal in current.barred:
            # the database refuses it too (approvals_no_rerun_chain_approval); this says why
            raise await _barred(conn, current, principal)
        if current.job_id is not None:
            # lock order jobs -> approvals -> runs: the job this approval holds back first,
            # so releasing or denying it below never waits on it after the run
            await jobs_q.lock(conn, current.tenant_id, current.job_id)
        # lock order: the approval (by this UPDATE) before the run (by the event)
        decided = await q.decide(conn, tenant_id=current.tenant_id, approval_id=approval_id,
                                 to=to, decided_by=principal, reason=reason)
        if decided is None:
            await _explain_undecidable(conn, current)
        assert decided is not None
        await timeline_q.append(
            conn, decided.tenant_id, decided.run_id, f"approval.{to.value}",
            step_id=decided.step_id, job_id=decided.job_id, actor=principal,
            data={"approval_id": str(approval_id), "reason": reason,
                  "job_hash": decided.job_hash,
                  "policy_snapshot_hash": decided.policy_snapshot_hash})
        detail = {"approval_id": str(approval_id), "decided_by": principal, "reason": reason}
        item: int | None = None
        if decided.job_id is None:  # an approval step: the decision is the step's outcome
            outcome = StepStatus.SUCCEEDED if approve else StepStatus.DENIED
        else:  # a policy approval: it releases (or denies) the blocked job
            outcome = StepStatus.RUNNING if approve else StepStatus.DENIED
            item = await _settle_blocked_job(conn, decided, approve=approve, detail=detail)
        if item is not None:  # a for_each item's job: the item moves, the step runs on
            await _settle_item(conn, decided, item, outcome, detail)
            await runs_q.wake(conn, decided.tenant_id, decided.run_id)
            return decided
        moved = await steps_q.transition_by_key(
            conn, decided.tenant_id, decided.run_id, decided.step_id, StepStatus.WAITING,
            outcome, output=detail if outcome is StepStatus.SUCCEEDED else None,
            error=None if approve else {"type": "ApprovalRejected", **detail})
        if moved is None:
            raise InvalidTransition(f"step {decided.step_id} is no longer waiting for approval")
        await runs_q.wake(conn, decided.tenant_id, decided.run_id)
    return decided


async def _barred(conn: Conn, approval: ApprovalRow, principal: str) -> Forbidden:
    """Why ``principal`` may not decide ``approval``, naming the run it started."""
    chain = await runs_q.rerun_chain(conn, approval.tenant_id, approval.run_id)
    started = [r for r in chain if r.created_by == principal]
    if started and started[0].depth == 0:
        return Forbidden(f"{principal!r} started run {approval.run_id} and cannot decide its "
                         "approvals")
    if started:
        return Forbidden(
            f"{principal!r} started run {started[0].run_id}, which run {approval.run_id} "
            "reruns: nobody who started a run of a rerun chain can decide its approvals")
    return Forbidden(f"{principal!r} is barred from deciding approval {approval.approval_id} "
                     f"(barred: {', '.join(approval.barred)})")


async def _settle_item(conn: Conn, approval: ApprovalRow, item: int, outcome: StepStatus,
                       detail: dict[str, Any]) -> None:
    """The item the approval held back runs on (or ends denied); the scheduler then
    decides its step (engine.scheduling.fanout)."""
    denied = outcome is StepStatus.DENIED
    moved = await items_q.transition_by_key(
        conn, approval.tenant_id, approval.run_id, approval.step_id, item, StepStatus.WAITING,
        outcome, error={"type": "ApprovalRejected", **detail} if denied else None)
    if moved is None:
        raise InvalidTransition(f"item {approval.step_id}[{item}] is no longer waiting for "
                                "approval")


async def _settle_blocked_job(conn: Conn, approval: ApprovalRow, *, approve: bool,
                              detail: dict[str, Any]) -> int | None:
    """Releases or denies the job; its for_each item index, if it is an item's."""
    assert approval.job_id is not None
    job = await jobs_q.get(conn, approval.tenant_id, approval.job_id)
    # approvals_job_of_own_run and approvals_job_of_own_step: the job is this run's, always
    assert job is None or (job.run_id, job.step_id) == (approval.run_id, approval.step_id)
    if job is None or job.status is not JobStatus.BLOCKED:
        raise InvalidTransition(f"job {approval.job_id} is no longer blocked for approval")
    if approve:
        await jobs_q.transition(conn, job, JobStatus.PENDING)
        await timeline_q.append(conn, job.tenant_id, job.run_id, "job.dispatched",
                                step_id=job.step_id, job_id=job.job_id, attempt=job.attempt,
                                actor=detail["decided_by"],
                                data={"topic": job.topic, "approval_id": detail["approval_id"],
                                      "constraints": job.constraints})
        await jobs_q.announce(conn, [job.topic])
    else:
        await jobs_q.transition(conn, job, JobStatus.DENIED,
                                error={"type": "ApprovalRejected", **detail})
    return job.item_index


async def _explain_undecidable(conn: Conn, before: ApprovalRow) -> None:
    now = await q.get(conn, before.tenant_id, before.approval_id)
    status = now.status if now is not None else before.status
    if status is ApprovalStatus.PENDING:
        raise InvalidTransition(f"approval {before.approval_id} has expired")
    raise Conflict(f"approval {before.approval_id} is already {status}; the first decision "
                   "stands")


async def page(db: Database, *, tenant_id: str | None, status: ApprovalStatus | None,
               after: tuple[datetime, UUID] | None = None,
               limit: int = 100) -> list[ApprovalRow]:
    """The approvals queue, oldest request first (tenant None: every tenant)."""
    async with db.connection() as conn:
        return await q.page(conn, tenant_id=tenant_id, status=status, after=after,
                            limit=max(1, min(limit, 1000)))


async def queue(db: Database, definitions: DefinitionCache, *, tenant_id: str | None,
                status: ApprovalStatus | None,
                after: tuple[datetime, UUID] | None = None,
                limit: int = 100) -> tuple[list[ApprovalRow], dict[UUID, dict[str, Any]]]:
    """A page of the queue and, per approval, what it is about (``context``): workflow,
    run status, the held job's topic, and the steps that run after it once approved —
    enough to triage a queue without opening each approval."""
    rows = await page(db, tenant_id=tenant_id, status=status, after=after, limit=limit)
    found: dict[UUID, dict[str, Any]] = {}
    async with db.connection() as conn:
        by_id = {r.approval_id: r for r in rows}
        for item in await q.context(conn, [(r.tenant_id, r.approval_id) for r in rows]):
            row = by_id[item["approval_id"]]
            workflow = await definitions.get(conn, row.tenant_id, item["workflow_id"],
                                                 item["workflow_version"])
            later = workflow.descendants(row.step_id) if row.step_id in workflow.steps else ()
            found[row.approval_id] = {
                "workflow_id": item["workflow_id"],
                "workflow_version": item["workflow_version"],
                "run_status": item["run_status"], "topic": item["topic"],
                "then": [sid for sid in workflow.steps if sid in later]}
    return rows, found


async def show(db: Database, tenant_id: str | None, approval_id: UUID) -> ApprovalRow:
    async with db.connection() as conn:
        return await get(conn, tenant_id, approval_id)


async def resolve_id(db: Database, tenant_id: str | None, value: str) -> UUID:
    """An approval id from a full id or a unique prefix (8 hex digits, as the page shows)."""
    found = ids.full(value)
    if found is not None:
        return found
    low, high = ids.prefix_range(value, "APPROVAL_ID")
    async with db.connection() as conn:
        rows = await q.by_id_prefix(conn, tenant_id, low, high, limit=11)
    return ids.one(value, [r.approval_id for r in rows], kind="approval", field="APPROVAL_ID")
