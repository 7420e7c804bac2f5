"""Dispatch plans (docs/design.md#dispatch-in-the-completion): which job steps of a
workflow version a worker's completion may dispatch itself under a policy snapshot, with
the snapshot's decision for each, recorded for warden.complete_jobs
(sql/schema/62_dispatch_plans.sql).

A step gets a plan only where dispatching it needs nothing SQL lacks: a job step with
dependencies (a root step is dispatched by the run's start), no template in its input
(the job's input is the run's, or the step's constant), no for_each, no `when`, no
concurrency or rate gate; and where the snapshot allows it whatever the input
(`Bundle.decision_for_any_input`). A tenant with no active snapshot gets none: its
decisions come from each process's configured default, which SQL cannot see. Neither do
processes with traces on write plans: a job dispatched in SQL carries no traceparent.

A start plan (sql/schema/63_start_plans.sql) lets warden.start_planned_run start a run
of the version in one call: every job step allowed at submit whatever the input, and
every root step a job step that could carry a dispatch plan, allowed whatever the input.

Each process writes the plans of a (snapshot, workflow version) once, from the first
scheduler pass over one of its runs (a start's pass included), and remembers that it did
once the pass has committed.
"""

from __future__ import annotations

import json
from typing import Any

from engine.core.enums import StepType
from engine.definitions.model import StepDef, WorkflowDef, plain
from engine.governance.decisions import ActivePolicy, facts_for
from engine.governance.policy import Decision, Verdict
from engine.process import tracing
from engine.runs.lifecycle import step_rows
from engine.runs.services import StartPlanMisses
from engine.scheduling.dispatch import ACTOR
from engine.store import Conn
from engine.store import dispatch_plans as plans_q
from engine.store.dispatch_plans import NewPlan, StartPlan

MAX_REMEMBERED = 4096

# (tenant, snapshot, workflow, version): whose plans a pass wrote
PlanKey = tuple[str, str, str, str]


def dispatchable_in_sql(step: StepDef) -> bool:
    """Whether a completion could dispatch this step as the dispatch gate would, with
    nothing but its rows and the plan (engine/scheduling/dispatch.py)."""
    return bool(step.depends_on) and _plain_job(step)


def _plain_job(step: StepDef) -> bool:
    """A job step whose dispatch needs nothing but its rows: no template, no for_each, no
    condition, no gate."""
    return (step.type is StepType.JOB and step.for_each is None
            and step.when is None and step.concurrency is None and step.rate_limit is None
            # `$${` (a literal `${`) is left out too: rendering would change it
            and (step.input is None or "${" not in json.dumps(constant_input(step))))


def constant_input(step: StepDef) -> dict[str, Any]:
    """The step's input as plain JSON values (the definition holds read-only mappings)."""
    assert step.input is not None
    thawed = plain(step.input)
    assert isinstance(thawed, dict)
    return thawed


def plans_for(workflow: WorkflowDef, tenant_id: str, policy: ActivePolicy) -> list[NewPlan]:
    """The plans of a workflow version under ``policy``: allowed steps only."""
    if policy.snapshot_hash is None:
        return []
    plans = []
    for step in workflow.steps.values():
        if not dispatchable_in_sql(step):
            continue
        decision = _allowed(workflow, tenant_id, policy, step)
        if decision is None:
            continue
        plans.append(NewPlan(step.id, decision.rule, decision.reason,
                             None if step.input is None else constant_input(step)))
    return plans


def start_plan_for(workflow: WorkflowDef, tenant_id: str,
                   policy: ActivePolicy) -> StartPlan | None:
    """The start plan of a workflow version under ``policy``, or None where a start needs
    the Python path (sql/schema/63_start_plans.sql says what qualifies)."""
    if policy.snapshot_hash is None:
        return None
    submits: list[dict[str, Any]] = []
    roots: list[dict[str, Any]] = []
    for step in workflow.steps.values():  # topological order: the scheduler's
        if step.type is StepType.WORKFLOW:
            return None  # a start pins the child versions it finds then
        root = not step.depends_on
        if root and not _plain_job(step):
            return None
        if step.type is not StepType.JOB:
            continue
        decision = _allowed(workflow, tenant_id, policy, step)
        if decision is None:
            return None
        submits.append({"step_id": step.id, "rule": decision.rule, "reason": decision.reason})
        if root:
            assert step.topic is not None  # validated: job steps have a topic
            roots.append({"step_id": step.id, "topic": step.topic, "priority": step.priority,
                          "timeout_ms": step.timeout_ms,
                          "input": None if step.input is None else constant_input(step),
                          "rule": decision.rule, "reason": decision.reason})
    return StartPlan(workflow.timeout_ms, step_rows(workflow), submits, roots)


def _allowed(workflow: WorkflowDef, tenant_id: str, policy: ActivePolicy,
             step: StepDef) -> Decision | None:
    """The snapshot's decision for the step if it is a plain allow whatever the input."""
    facts = facts_for(step, tenant_id=tenant_id, workflow_id=workflow.id, input=None)
    decision = policy.bundle.decision_for_any_input(facts)
    if decision is None or decision.verdict is not Verdict.ALLOW or decision.constraints:
        return None
    return decision


class DispatchPlans:
    """What this process has written already (bounded: forgetting costs one more insert
    that changes nothing). ``misses``: the process's starts that found no start plan,
    told once a plan of their workflow may exist."""

    def __init__(self, misses: StartPlanMisses | None = None) -> None:
        self._written: set[PlanKey] = set()
        self._misses = misses

    @staticmethod
    def wanted() -> bool:
        """False while traces are on: a job dispatched in SQL would carry no traceparent."""
        return not tracing.enabled()

    async def ensure(self, conn: Conn, tenant_id: str, workflow: WorkflowDef,
                     policy: ActivePolicy) -> PlanKey | None:
        """Writes the plans unless this process has; returns the key to `remember` once
        the transaction commits (None: nothing to remember)."""
        if policy.snapshot_hash is None or not self.wanted():
            return None
        key = (tenant_id, policy.snapshot_hash, workflow.id, workflow.version)
        if key in self._written:
            return None
        plans = plans_for(workflow, tenant_id, policy)
        if plans:
            await plans_q.insert(conn, tenant_id=tenant_id, workflow_id=workflow.id,
                                 workflow_version=workflow.version,
                                 snapshot_hash=policy.snapshot_hash, plans=plans,
                                 created_by=ACTOR)
        start = start_plan_for(workflow, tenant_id, policy)
        if start is not None:
            await plans_q.insert_start(conn, tenant_id=tenant_id, workflow_id=workflow.id,
                                       workflow_version=workflow.version,
                                       snapshot_hash=policy.snapshot_hash, plan=start,
                                       created_by=ACTOR)
        return key

    def remember(self, keys: set[PlanKey]) -> None:
        """After the commit of the plans of ``keys``."""
        if len(self._written) + len(keys) > MAX_REMEMBERED:
            self._written.clear()
        self._written |= keys
        if self._misses is not None:
            for tenant_id, _, workflow_id, _ in keys:
                self._misses.planned(tenant_id, workflow_id)
