"""Rerun from a step (docs/design.md#reruns-and-cancellation): a new run of the same
workflow version and input that reuses the outputs of every succeeded step not downstream
of ``from_step``, and runs ``from_step``, its descendants, and anything that did not
succeed, again.

Reruns ask again (docs/recovery.md): an approval is used by the run it was given for,
once. A job step that runs again under an approval step runs after a new decision: that
approval step is asked again in the new run, and everything downstream of it runs again
after the decision (a reused output downstream of it would otherwise let the job start
before anyone decided). Job steps run again pass the dispatch gate again, so a
``require_approval`` decision asks for a new approval bound to the new run's job. Nobody
who started a run of the rerun chain may decide the rerun's approvals
(approvals_no_rerun_chain_approval).

A dry run writes nothing and returns the plan, with the decision each step to run would
get under the policy active now, the approvals the rerun will need and who may not give
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from engine.core.canonical import sha256_hex
from engine.core.enums import StepStatus, StepType
from engine.core.errors import InvalidInput, InvalidTransition
from engine.definitions.model import WorkflowDef
from engine.governance.decisions import Evaluated, facts_for
from engine.governance.policy import Verdict
from engine.process import tracing
from engine.runs import flowview
from engine.runs.lifecycle import StartedRun, denial, get_row, step_rows, submit_gate
from engine.runs.services import Services
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import RunRow

_WORK = (StepType.JOB, StepType.WORKFLOW)


@dataclass(frozen=True)
class RerunPlan:
    rerun_of: UUID
    from_step: str
    reused: dict[str, Any]  # step id -> the output carried over
    to_run: list[str]  # in topological order
    decisions: dict[str, Evaluated]  # job steps to run -> the decision they would get now
    approvals_needed: list[str]  # approval steps, and job steps policy would hold
    # who may not decide them: every starter of the rerun chain (and, when known, whoever
    # starts the rerun)
    barred_approvers: list[str]
    # what the control-flow steps to run will do again, in words (engine/runs/flowview.py)
    flow: dict[str, str] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        return {"rerun_of": str(self.rerun_of), "from_step": self.from_step,
                "reused": [{"step_id": s, "output": o} for s, o in self.reused.items()],
                "to_run": self.to_run,
                "decisions": {s: e.to_doc() for s, e in self.decisions.items()},
                "approvals_needed": self.approvals_needed,
                "barred_approvers": self.barred_approvers, "flow": self.flow}


async def plan(svc: Services, *, tenant_id: str | None, run_id: UUID, from_step: str,
               by: str | None = None) -> RerunPlan:
    """The plan of a rerun ``by`` would start (None: the starter is not known yet)."""
    async with svc.db.transaction() as conn:
        source = await get_row(conn, tenant_id, run_id)
        return await _plan(svc, conn, source, from_step, by)


def gated(workflow: WorkflowDef, to_run: set[str]) -> set[str]:
    """``to_run`` with every approval step that a job step of it depends on, and everything
    downstream of such an approval: an approval is used once, by the run it was given for,
    so the rerun asks again before any of that work starts."""
    approvals = [sid for sid, step in workflow.steps.items() if step.type is StepType.APPROVAL]
    result = set(to_run)
    grown = True
    while grown:  # a gate added brings its descendants, which may sit under other gates
        grown = False
        for gate in approvals:
            below = workflow.descendants(gate)
            # a child run is work too: its jobs must not start on a reused decision
            if gate not in result and any(workflow.steps[sid].type in _WORK
                                          for sid in below & result):
                result |= {gate} | below
                grown = True
    return result


async def _plan(svc: Services, conn: Any, source: RunRow, from_step: str,
                by: str | None) -> RerunPlan:
    workflow = await svc.definitions.get(conn, source.tenant_id, source.workflow_id,
                                         source.workflow_version)
    if from_step not in workflow.steps:
        raise InvalidInput("from_step", f"workflow {source.workflow_id} "
                           f"{source.workflow_version} has no step {from_step!r} (steps: "
                           f"{', '.join(workflow.steps)})")
    steps = {s.step_id: s for s in await steps_q.of_run(conn, source.tenant_id, source.run_id)}
    again = gated(workflow, {from_step} | set(workflow.descendants(from_step)) | {
        sid for sid in workflow.steps if steps[sid].status is not StepStatus.SUCCEEDED})
    reused = {sid: steps[sid].output for sid in workflow.steps if sid not in again}
    to_run = [sid for sid in workflow.steps if sid not in reused]
    decisions: dict[str, Evaluated] = {}
    approvals: list[str] = []
    for sid in to_run:
        step = workflow.steps[sid]
        if step.type is StepType.APPROVAL:
            approvals.append(sid)
        elif step.type is StepType.JOB:
            decisions[sid] = await svc.policies.evaluate(conn, source.tenant_id, facts_for(
                step, tenant_id=source.tenant_id, workflow_id=source.workflow_id,
                input=source.input))
            if decisions[sid].decision.verdict is Verdict.REQUIRE_APPROVAL:
                approvals.append(sid)
    chain = await runs_q.rerun_chain(conn, source.tenant_id, source.run_id)
    barred = {r.created_by for r in chain} | ({by} if by is not None else set())
    return RerunPlan(source.run_id, from_step, reused, to_run, decisions, approvals,
                     sorted(barred), _notes(flowview.rerun_notes(workflow, to_run,
                                                                 source.input, reused),
                                            _flows(workflow, to_run, source)))


def _notes(*parts: dict[str, str]) -> dict[str, str]:
    """One sentence per step from each source of notes, joined where both speak."""
    notes: dict[str, str] = {}
    for part in parts:
        for sid, note in part.items():
            notes[sid] = f"{notes[sid]}; {note}" if sid in notes else note
    return notes


def _flows(workflow: WorkflowDef, to_run: list[str], source: RunRow) -> dict[str, str]:
    """What running a for_each or workflow step again does, in words."""
    flows: dict[str, str] = {}
    for sid in to_run:
        step = workflow.steps[sid]
        child = ""
        if step.type is StepType.WORKFLOW:
            pin = (source.pins or {}).get(sid) or {}
            child = f"{pin.get('workflow', step.workflow)}@{pin.get('version', '?')}"
        if step.for_each is not None:
            what = f"a new child run of {child} per item" if child else "new jobs"
            flows[sid] = (f"runs every item again ({what}): the list {step.for_each} is read "
                          "anew when the step is ready, and each item is decided by policy "
                          "at its dispatch")
        elif child:
            flows[sid] = f"starts a new child run of {child} (the version pinned by the run)"
    return flows


async def rerun(svc: Services, *, tenant_id: str | None, run_id: UUID, from_step: str,
                created_by: str) -> tuple[RerunPlan, StartedRun]:
    """Creates the new run; its first timeline event (run.rerun) links the original, and
    the original's timeline records the rerun too."""
    async with svc.db.transaction() as conn:
        source = await get_row(conn, tenant_id, run_id)
        the_plan = await _plan(svc, conn, source, from_step,  # validates from_step first
                               created_by)
        if not source.status.is_final:
            raise InvalidTransition(f"run {run_id} is still {source.status}; cancel it or let "
                                    "it finish before rerunning")
        workflow = await svc.definitions.get(conn, source.tenant_id, source.workflow_id,
                                             source.workflow_version)
        run = await runs_q.insert(
            conn, tenant_id=source.tenant_id, workflow_id=source.workflow_id,
            workflow_version=source.workflow_version, input=source.input,
            idempotency_key=None,
            request_digest=sha256_hex({"rerun_of": str(run_id), "from_step": from_step}),
            rerun_of=source.run_id, created_by=created_by, timeout_ms=workflow.timeout_ms,
            pins=source.pins)  # the same child versions as the run it reruns
        assert run is not None  # no idempotency key: nothing can conflict
        link = {"rerun_of": str(source.run_id), "from_step": from_step,
                "reused": sorted(the_plan.reused), "to_run": the_plan.to_run,
                "approvals_needed": the_plan.approvals_needed,
                "barred_approvers": the_plan.barred_approvers}
        events = [timeline_q.Event("run.rerun", actor=created_by, data=link),
                  timeline_q.Event("run.created", actor=created_by,
                                   data={"workflow_id": run.workflow_id,
                                         "version": run.workflow_version})]
        await steps_q.insert_all(conn, run.tenant_id, run.run_id, step_rows(workflow))
        for step in await steps_q.of_run(conn, run.tenant_id, run.run_id):
            if step.step_id in the_plan.reused:
                await steps_q.transition(conn, step, StepStatus.SUCCEEDED,
                                         output=the_plan.reused[step.step_id])
        run = await submit_gate(svc, conn, run, workflow, events=events,
                                skip=set(the_plan.reused))
        await timeline_q.append_many(conn, run.tenant_id, run.run_id, events)
        await runs_q.wake(conn, run.tenant_id, run.run_id)
        await timeline_q.append(conn, source.tenant_id, source.run_id, "run.rerun",
                                actor=created_by,
                                data={"rerun_run_id": str(run.run_id), "from_step": from_step})
    if run.status.is_final:
        tracing.run_ended(run, [])  # denied at submit: a trace of one span
        raise denial(run)
    return the_plan, StartedRun(run, replayed=False)
