"""What an approval lets run, as one document for the API (`GET /approvals/{id}`), the
CLI (`warden approvals show`) and the operator page: the values its job hash is computed
from (recomputed here and compared with the stored hash), the rule or step that asked,
and each later step with its input rendered by the engine's own renderer where the
values already exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from engine.core.enums import StepStatus, StepType
from engine.core.errors import InvalidInput, NotFound
from engine.definitions import workflows
from engine.definitions.model import StepDef, WorkflowDef
from engine.definitions.templates import render
from engine.governance import approvals, decisions
from engine.runs import lifecycle, views
from engine.runs.lifecycle import RunDetail
from engine.store.records import ApprovalRow, PolicyDecisionRow

if TYPE_CHECKING:
    from engine.runs.services import Services


async def plan(svc: Services, tenant_id: str | None, approval_id: UUID) -> dict[str, Any]:
    """The approval (of the tenant; None: any tenant) and what it lets run."""
    approval = await approvals.show(svc.db, tenant_id, approval_id)
    detail = await lifecycle.detail(svc, approval.tenant_id, approval.run_id)
    workflow = await _workflow(svc.db, detail)
    made = await decisions.decisions_of_run(svc.db, approval.tenant_id, approval.run_id)
    active = await decisions.active_pointer(svc.db, approval.tenant_id)
    return plan_doc(approval, detail, workflow, made, active)


async def _workflow(db: Any, detail: RunDetail) -> WorkflowDef:
    run = detail.run
    for row in await workflows.versions(db, run.tenant_id, run.workflow_id):
        if row.version == run.workflow_version:
            return workflows.in_definition_order(row)
    raise NotFound(f"workflow {run.workflow_id!r} version {run.workflow_version} not found")


def plan_doc(approval: ApprovalRow, detail: RunDetail, workflow: WorkflowDef,
             made: list[PolicyDecisionRow], active_snapshot: str | None) -> dict[str, Any]:
    run = detail.run
    outputs = {s.step_id: s.output for s in detail.steps if s.status is StepStatus.SUCCEEDED}
    gate = workflow.steps[approval.step_id]
    covers = _covers(approval, detail, gate, outputs)
    recomputed = decisions.job_hash(tenant_id=run.tenant_id, run_id=run.run_id,
                                     step_id=approval.step_id, **covers)
    statuses = {s.step_id: s.status.value for s in detail.steps}
    later = workflow.descendants(gate.id)
    return {
        "approval_id": str(approval.approval_id), "kind": approval.kind,
        "status": approval.status.value,
        "run": {"run_id": str(run.run_id), "workflow_id": run.workflow_id,
                "workflow_version": run.workflow_version, "workflow_name": workflow.name,
                "status": run.status.value, "created_by": run.created_by},
        "gate": {"step_id": gate.id, "type": gate.type.value, "depends_on": list(gate.depends_on),
                 "expires_in_ms": gate.expires_in_ms},
        "asked_by": _asked_by(approval, workflow, gate, made),
        "covers": covers,
        "job_hash": approval.job_hash,
        "job_hash_matches": recomputed == approval.job_hash,
        "policy_snapshot_hash": approval.policy_snapshot_hash,
        "active_snapshot_hash": active_snapshot,
        "then": [_later_step(workflow.steps[sid], statuses.get(sid), run.input, outputs,
                             made) for sid in workflow.steps if sid in later],
    }


def _covers(approval: ApprovalRow, detail: RunDetail, gate: StepDef,
            outputs: dict[str, Any]) -> dict[str, Any]:
    """The values the job hash binds, as the dispatcher hashed them (engine.scheduling.dispatch)."""
    if approval.job_id is None:  # an approval step: the run input and what its deps produced
        return {"topic": None, "input": detail.run.input,
                "upstream": {dep: outputs.get(dep) for dep in gate.depends_on},
                "constraints": {}}
    job = next((j for j in detail.jobs if j.job_id == approval.job_id), None)
    if job is None:
        raise NotFound(f"job {approval.job_id} of approval {approval.approval_id} not found")
    return {"topic": job.topic, "input": job.input, "upstream": job.upstream,
            "constraints": job.constraints}


def _asked_by(approval: ApprovalRow, workflow: WorkflowDef, gate: StepDef,
              decisions: list[PolicyDecisionRow]) -> dict[str, Any]:
    if approval.job_id is None:
        return {"kind": "step", "step_id": gate.id, "workflow_id": workflow.id,
                "workflow_version": workflow.version}
    asking = [d for d in decisions
              if d.job_id == approval.job_id and d.decision == "require_approval"]
    return {"kind": "policy", "decision": views.decision(asking[-1]) if asking else None}


def _later_step(step: StepDef, status: str | None, run_input: Any, outputs: dict[str, Any],
                decisions: list[PolicyDecisionRow]) -> dict[str, Any]:
    doc: dict[str, Any] = {"step_id": step.id, "type": step.type.value, "status": status,
                           "topic": step.topic, "depends_on": list(step.depends_on),
                           "input_template": None if step.input is None else dict(step.input),
                           "input": None, "input_note": None,
                           "message": step.message, "decision": None}
    if step.type is StepType.JOB:
        if step.input is None:
            doc["input"], doc["input_note"] = run_input, "the run input (no input template)"
        else:
            try:
                doc["input"] = render(dict(step.input), run_input=run_input,
                                      step_outputs=outputs)
            except InvalidInput as exc:
                doc["input_note"] = f"rendered at dispatch: {exc}"
    submit = [d for d in decisions if d.step_id == step.id and d.stage == "submit"]
    if submit:
        doc["decision"] = views.decision(submit[-1])
    return doc
