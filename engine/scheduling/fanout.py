"""for_each steps (docs/workflows.md#for_each): one item per element of a list, each item
an attempt line of its own under the same dispatch gate as any job.

When a for_each step becomes ready, its list is rendered (only then is it known), checked
(a list, at most MAX_FOR_EACH_ITEMS elements), and its items are created in one statement.
Every later pass over the run then `advance`s the step: it decides the step's outcome
from its items (every item succeeded: the list of their outputs, in order; one failed,
timed out or was denied after its retries: the step ends so, and its other unfinished
items and their jobs are cancelled), dispatches the retries the job protocol scheduled
(warden.end_attempt sets an item's retry_at as it does a step's), and starts new items
while fewer than ``max_parallel`` are in flight.

Each item attempt is rendered with its ``${item}`` and evaluated by the policy on its own
input; an allowed attempt joins the pass's set-based writes (its decision, the item's
attempt count and its job are written with every other run's at the end of the pass:
a 1,000-item step is a handful of statements, not 1,000 round trips). An item cannot wait
for an approval (one pending approval per step), so require_approval denies the item,
saying so. A `workflow` step with for_each starts one child run per item
(engine.scheduling.children) instead of a job.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from engine.core.enums import ApprovalStatus, JobStatus, StepStatus, StepType
from engine.core.errors import Busy, InvalidInput
from engine.definitions.model import MAX_FOR_EACH_ITEMS, StepDef
from engine.definitions.templates import Item, kind_of, render
from engine.governance.decisions import Evaluated, facts_for, job_hash, record
from engine.governance.policy import Facts, Verdict
from engine.runs.services import Services
from engine.scheduling import children
from engine.scheduling.dispatch import (
    RunPass,
    attempt_timeout,
    denial_error,
    gates_of,
    job_priority,
    moved,
    shallow_gates,
)
from engine.scheduling.gates import Gates, with_policy
from engine.store import Conn
from engine.store import approvals as approvals_q
from engine.store import items as items_q
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store.items import ItemStart
from engine.store.jobs import NewJob
from engine.store.records import ItemRow, JobRow, RunKey, RunRow, StepRow

# An item in one of these ends its step so (the first one in this order wins: a denial is
# what an operator must see first, as for a run's own outcome, engine.definitions.dag).
_ENDING = (StepStatus.DENIED, StepStatus.FAILED, StepStatus.TIMED_OUT, StepStatus.CANCELLED)
_IN_FLIGHT = frozenset({StepStatus.RUNNING, StepStatus.WAITING})


@dataclass
class Flow:
    """What a pass knows of one run's running for_each steps and workflow steps."""

    items: dict[str, list[ItemRow]] = field(default_factory=dict)  # by step, in order
    # the newest child of each (step, item): item None for a workflow step without for_each
    children: dict[tuple[str, int | None], RunRow] = field(default_factory=dict)


async def load_flows(conn: Conn, steps: Mapping[RunKey, list[StepRow]]) -> dict[RunKey, Flow]:
    """The items and children of a pass's runs, one query each, and only for the runs
    that have a running for_each or workflow step (most passes read nothing more)."""
    fanned = [key for key, rows in steps.items() if any(is_fanout(s) for s in rows)]
    parents = [key for key, rows in steps.items()
               if any(s.type is StepType.WORKFLOW and s.status is StepStatus.RUNNING
                      for s in rows)]
    flows: dict[RunKey, Flow] = defaultdict(Flow)
    if fanned:
        for item in await items_q.of_running_steps(conn, fanned):
            flows[(item.tenant_id, item.run_id)].items.setdefault(item.step_id, []).append(item)
    if parents:
        for child in await runs_q.latest_children_of_runs(conn, parents):
            assert child.parent_run_id is not None and child.parent_step_id is not None
            flows[(child.tenant_id, child.parent_run_id)].children[
                (child.parent_step_id, child.parent_item_index)] = child
    return dict(flows)


def is_fanout(step: StepRow) -> bool:
    """A running step whose items (or child) move it: a job step with for_each counts no
    attempts of its own, so a running one with none is a for_each step."""
    return step.status is StepStatus.RUNNING and step.attempts == 0


class Fanout:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def start(self, conn: Conn, state: RunPass, definition: StepDef, step: StepRow,
                    ) -> tuple[StepRow, list[ItemRow]]:
        """The step became ready: its list, its items, and the first ones dispatched."""
        assert definition.for_each is not None
        try:
            values = render(definition.for_each, run_input=state.run.input,
                            step_outputs=_outputs(state))
        except InvalidInput as exc:
            return await self._refuse(conn, state, step, {
                "type": "InputRenderError", "message": str(exc), "field": exc.field}), []
        if not isinstance(values, list):
            return await self._refuse(conn, state, step, {
                "type": "ForEachNotAList", "field": "for_each",
                "message": f"for_each {definition.for_each} is {kind_of(values)}, not a list"}), []
        if len(values) > MAX_FOR_EACH_ITEMS:
            return await self._refuse(conn, state, step, {
                "type": "ForEachTooManyItems", "field": "for_each",
                "message": f"for_each {definition.for_each} has {len(values)} items; the "
                           f"limit is {MAX_FOR_EACH_ITEMS}"}), []
        await state.event(conn, "foreach.expanded", step.step_id, data={
            "items": len(values), "max_parallel": definition.max_parallel})
        if not values:
            await state.event(conn, "foreach.ended", step.step_id,
                              data={"status": "succeeded", "items": 0})
            return await moved(steps_q.transition(conn, step, StepStatus.SUCCEEDED,
                                                  output=[])), []
        await items_q.insert(conn, tenant_id=step.tenant_id, run_id=step.run_id,
                             step_id=step.step_id, items=values,
                             max_attempts=definition.retries.max_attempts)
        step = await moved(steps_q.transition(conn, step, StepStatus.RUNNING))
        items = [ItemRow(step.tenant_id, step.run_id, step.step_id, index, StepStatus.PENDING,
                         value, 0, definition.retries.max_attempts, None, None, None, None,
                         None) for index, value in enumerate(values)]
        return await self.advance(conn, state, definition, step, items)

    async def advance(self, conn: Conn, state: RunPass, definition: StepDef, step: StepRow,
                      items: list[ItemRow], kids: Mapping[int, RunRow] | None = None,
                      ) -> tuple[StepRow, list[ItemRow]]:
        """Ends the step if its items decide it, else dispatches what is due. ``kids``:
        the newest child run of each item of a workflow step."""
        items = list(items)
        if definition.type is StepType.WORKFLOW:
            for index, item in enumerate(items):
                items[index] = await children.settle_item(self.svc, conn, state, definition,
                                                          step, item, (kids or {}).get(index))
        # a dispatch can end an item at once (denied, or its input fails), which may end
        # the step: decide again after dispatching, at most once more
        for _ in range(2):
            ended = await self._outcome(conn, state, step, items)
            if ended is not None:
                return ended, items
            if not await self._dispatch_due(conn, state, definition, step, items):
                break
        return step, items

    async def advance_run(self, conn: Conn, state: RunPass, flow: Flow) -> None:
        """Every running for_each and workflow step of the run, once per pass."""
        for step_id, definition in state.workflow.steps.items():
            step = state.steps[step_id]
            if step.status is not StepStatus.RUNNING:
                continue
            if definition.for_each is not None and step_id in flow.items:
                kids = {index: child for (sid, index), child in flow.children.items()
                        if sid == step_id and index is not None}
                state.steps[step_id], flow.items[step_id] = await self.advance(
                    conn, state, definition, step, flow.items[step_id], kids)
            elif definition.type is StepType.WORKFLOW and definition.for_each is None:
                state.steps[step_id] = await children.advance_step(
                    self.svc, conn, state, definition, step, flow.children.get((step_id, None)))

    async def reevaluate(self, conn: Conn, state: RunPass, job: JobRow,
                         items: list[ItemRow]) -> None:
        """Policy drift on an unclaimed item job: allowed again, it is re-stamped under the
        active snapshot; otherwise it and its item end denied (the step then ends)."""
        definition = state.workflow.steps[job.step_id]
        facts = facts_for(definition, tenant_id=job.tenant_id,
                          workflow_id=state.run.workflow_id, input=job.input)
        evaluated = await self.svc.policies.decide(
            conn, stage="dispatch", facts=facts, run_id=job.run_id, job_id=job.job_id,
            attempt=job.attempt, policy=await state.policy(self.svc, conn),
            events=state.events)
        verdict = evaluated.decision.verdict
        assert job.item_index is not None
        item = items[job.item_index]
        if job.status is JobStatus.BLOCKED:  # its approval was asked under the old snapshot
            old = await approvals_q.lock_pending_of_job(conn, job.tenant_id, job.job_id)
            if old is None:
                raise Busy(f"approval of {job.job_id} is being decided")
            reason = (f"policy changed to snapshot {evaluated.snapshot_hash}: "
                      f"{verdict.value}")
            await moved(approvals_q.close(conn, old, ApprovalStatus.SUPERSEDED, reason))
            await state.event(conn, "approval.superseded", job.step_id, job_id=job.job_id,
                              data={"approval_id": str(old.approval_id), "reason": reason,
                                    "policy_snapshot_hash": evaluated.snapshot_hash})
        status = {Verdict.DENY: JobStatus.DENIED,
                  Verdict.REQUIRE_APPROVAL: JobStatus.BLOCKED}.get(verdict, JobStatus.PENDING)
        error = denial_error(evaluated) if verdict is Verdict.DENY else None
        job = await moved(jobs_q.transition(conn, job, status,
                                            snapshot_hash=evaluated.snapshot_hash,
                                            constraints=dict(evaluated.decision.constraints),
                                            error=error))
        if verdict is Verdict.DENY:
            items[item.item_index] = await moved(items_q.transition(
                conn, item, StepStatus.DENIED, error=error))
        elif verdict is Verdict.REQUIRE_APPROVAL:
            await self._ask(conn, state, job, evaluated)
            if item.status is not StepStatus.WAITING:
                items[item.item_index] = await moved(items_q.transition(
                    conn, item, StepStatus.WAITING))
        elif item.status is StepStatus.WAITING:
            items[item.item_index] = await moved(items_q.transition(
                conn, item, StepStatus.RUNNING))

    # ------------------------------------------------------------ internals

    async def _outcome(self, conn: Conn, state: RunPass, step: StepRow,
                       items: list[ItemRow]) -> StepRow | None:
        counts = Counter(item.status for item in items)
        for status in _ENDING:
            if counts[status]:
                culprit = next(i for i in items if i.status is status)
                return await self._end(conn, state, step, items, status, culprit)
        if counts[StepStatus.SUCCEEDED] == len(items):
            await state.event(conn, "foreach.ended", step.step_id, data={
                "status": "succeeded", "items": len(items)})
            return await moved(steps_q.transition(conn, step, StepStatus.SUCCEEDED,
                                                  output=[i.output for i in items]))
        return None

    async def _end(self, conn: Conn, state: RunPass, step: StepRow, items: list[ItemRow],
                   status: StepStatus, culprit: ItemRow) -> StepRow:
        """An item decided the step: its unfinished siblings and their jobs are cancelled
        (a running job learns it at its next heartbeat, as when a run is cancelled)."""
        error = {"type": f"Item{status.value.title().replace('_', '')}",
                 "item_index": culprit.item_index,
                 "message": f"item {culprit.item_index} of {step.step_id} ended {status.value}",
                 "error": culprit.error}
        cancel = {"type": "SiblingEnded", "item_index": culprit.item_index,
                  "message": f"item {culprit.item_index} ended {status.value}"}
        jobs = await jobs_q.lock_open_of_step(conn, step.tenant_id, step.run_id, step.step_id)
        for approval in await approvals_q.lock_pending_of_run(conn, step.tenant_id,
                                                              step.run_id, nowait=True):
            if approval.step_id != step.step_id:
                continue
            await moved(approvals_q.close(conn, approval, ApprovalStatus.EXPIRED,
                                          str(cancel["message"])))
            await state.event(conn, "approval.expired", step.step_id, job_id=approval.job_id,
                              data={"approval_id": str(approval.approval_id),
                                    "reason": cancel["message"]})
        for job in jobs:
            await moved(jobs_q.end(conn, job, JobStatus.CANCELLED, cancel))
            await state.event(conn, "job.cancelled", step.step_id, job_id=job.job_id,
                              attempt=job.attempt,
                              data={"was": job.status.value, "worker": job.worker,
                                    "item_index": job.item_index,
                                    "reason": cancel["message"]})
        ended = await items_q.end_open(conn, step.tenant_id, step.run_id, step.step_id,
                                       unstarted=StepStatus.CANCELLED,
                                       started=StepStatus.CANCELLED, error=cancel)
        ended_children = await children.cancel_of_step(conn, state, step, reason=cancel)
        for row in ended:
            items[row.item_index] = row
        await state.event(conn, "foreach.ended", step.step_id, data={
            "status": status.value, "items": len(items), "item_index": culprit.item_index,
            "cancelled_items": len(ended), "cancelled_jobs": len(jobs),
            "cancelled_children": ended_children})
        return await moved(steps_q.transition(conn, step, status, error=error))

    async def _dispatch_due(self, conn: Conn, state: RunPass, definition: StepDef,
                            step: StepRow, items: list[ItemRow]) -> bool:
        """Retries the job protocol scheduled, then new items up to max_parallel. Every due
        attempt is rendered and decided first: if one of them ends at dispatch (denied, or
        its input fails), only that one is written and True returned, so the step's
        outcome is decided before anything else of it is dispatched."""
        due: list[tuple[ItemRow, datetime | None]] = [
            (item, item.retry_at) for item in items
            if item.status is StepStatus.RUNNING and item.retry_at is not None]
        assert definition.max_parallel is not None
        free = definition.max_parallel - sum(1 for i in items if i.status in _IN_FLIGHT)
        due += [(item, None) for item in items if item.status is StepStatus.PENDING][:max(free, 0)]
        if definition.type is StepType.WORKFLOW:
            for item, _ in due:
                items[item.item_index] = await children.start_for_item(
                    self.svc, conn, state, definition, step, item)
                if items[item.item_index].status.is_final:
                    return True
            return False
        plans = [await self._plan(conn, state, definition, step, item, at) for item, at in due]
        for plan in plans:
            if plan.ends:
                items[plan.item.item_index] = await self._end_at_dispatch(conn, state, plan)
                return True
        for plan in plans:
            held = plan.evaluated is not None and \
                plan.evaluated.decision.verdict is Verdict.REQUIRE_APPROVAL
            items[plan.item.item_index] = await (self._hold if held else self._defer)(
                conn, state, plan)
        return False

    async def _plan(self, conn: Conn, state: RunPass, definition: StepDef, step: StepRow,
                    item: ItemRow, available_at: datetime | None) -> _Plan:
        """An item attempt rendered and decided, nothing written yet."""
        plan = _Plan(definition, step, item, available_at)
        try:
            plan.input = item_input(state, definition, item)
            plan.gates = gates_of(state, definition)
        except InvalidInput as exc:
            plan.error = {"type": "InputRenderError", "message": str(exc), "field": exc.field}
            return plan
        policy = await state.policy(self.svc, conn)
        plan.facts = facts_for(definition, tenant_id=step.tenant_id,
                               workflow_id=state.run.workflow_id, input=plan.input)
        plan.evaluated = Evaluated(policy.snapshot_hash, policy.bundle.evaluate(plan.facts))
        plan.gates = with_policy(plan.gates, plan.evaluated.decision)
        return plan

    async def _defer(self, conn: Conn, state: RunPass, plan: _Plan) -> ItemRow:
        """An allowed attempt joins the pass's set-based writes."""
        definition, step, item = plan.definition, plan.step, plan.item
        assert definition.topic is not None and plan.facts is not None
        assert plan.evaluated is not None
        writes = state.writes
        constraints = dict(plan.evaluated.decision.constraints)
        state.events.append(writes.decisions.add("dispatch", plan.facts, run_id=step.run_id,
                                                  job_id=plan.job_id, attempt=plan.attempt,
                                                  evaluated=plan.evaluated))
        max_attempts = int(constraints["max_attempts"]) if "max_attempts" in constraints \
            else None
        writes.item_starts.append(ItemStart(item.tenant_id, item.run_id, item.step_id,
                                            item.item_index, item.attempts, max_attempts))
        writes.jobs.append(NewJob(
            step.tenant_id, step.run_id, step.step_id, plan.attempt, definition.topic,
            job_priority(state, definition), plan.input, plan.upstream(state), constraints,
            attempt_timeout(definition, constraints), plan.available_at,
            plan.evaluated.snapshot_hash, None, item.item_index, **shallow_gates(plan.gates)))
        now = await writes.now(conn)
        await state.event(conn, "job.dispatched", step.step_id, job_id=plan.job_id,
                          attempt=plan.attempt, data={
                              "topic": definition.topic, "item_index": item.item_index,
                              "available_at": max(now, plan.available_at or now).isoformat(),
                              "constraints": constraints})
        state.topics.add(definition.topic)
        return replace(item, status=StepStatus.RUNNING, attempts=plan.attempt, retry_at=None,
                       max_attempts=max_attempts or item.max_attempts,
                       started_at=item.started_at or now)

    async def _hold(self, conn: Conn, state: RunPass, plan: _Plan) -> ItemRow:
        """Policy requires an approval for this item attempt: a blocked job and an approval
        bound to its snapshot and job hash, as for a plain step; the item waits (and counts
        against max_parallel) until someone decides."""
        definition, step, item = plan.definition, plan.step, plan.item
        assert definition.topic is not None and plan.facts is not None
        assert plan.evaluated is not None
        await record(conn, stage="dispatch", facts=plan.facts, run_id=step.run_id,
                     job_id=plan.job_id, attempt=plan.attempt, evaluated=plan.evaluated,
                     events=state.events)
        constraints = dict(plan.evaluated.decision.constraints)
        job = await jobs_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            attempt=plan.attempt, topic=definition.topic, status=JobStatus.BLOCKED,
            priority=job_priority(state, definition), input=plan.input,
            upstream=plan.upstream(state), constraints=constraints,
            timeout_ms=attempt_timeout(definition, constraints), available_at=plan.available_at,
            policy_snapshot_hash=plan.evaluated.snapshot_hash, item_index=item.item_index,
            gates=shallow_gates(plan.gates))
        await self._ask(conn, state, job, plan.evaluated)
        return await moved(items_q.transition(conn, item, StepStatus.WAITING, attempted=True))

    async def _ask(self, conn: Conn, state: RunPass, job: JobRow, evaluated: Evaluated) -> None:
        digest = job_hash(tenant_id=job.tenant_id, run_id=job.run_id, step_id=job.step_id,
                          topic=job.topic, input=job.input, upstream=job.upstream,
                          constraints=job.constraints)
        expires = evaluated.decision.constraints.get("approval_expires_in_ms")
        approval = await approvals_q.insert(
            conn, tenant_id=job.tenant_id, run_id=job.run_id, step_id=job.step_id,
            job_id=job.job_id, kind="policy", policy_snapshot_hash=evaluated.snapshot_hash,
            job_hash=digest, requested_by=state.run.created_by,
            expires_in_ms=int(expires) if expires else self.svc.approval_expires_ms)
        await state.event(conn, "approval.requested", job.step_id, job_id=job.job_id, data={
            "approval_id": str(approval.approval_id), "kind": "policy", "job_hash": digest,
            "policy_snapshot_hash": evaluated.snapshot_hash, "barred": approval.barred,
            "item_index": job.item_index,
            "expires_at": approval.expires_at.isoformat() if approval.expires_at else None})

    async def _end_at_dispatch(self, conn: Conn, state: RunPass, plan: _Plan) -> ItemRow:
        """Its input cannot be rendered, or policy denied it: the item ends here,
        recorded."""
        definition, step, item = plan.definition, plan.step, plan.item
        if plan.error is not None:
            await state.event(conn, "job.failed", step.step_id, attempt=plan.attempt, data={
                "error": plan.error, "retryable": False, "dispatched": False,
                "item_index": item.item_index})
            return await moved(items_q.transition(conn, item, StepStatus.FAILED,
                                                  attempted=True, error=plan.error))
        assert definition.topic is not None and plan.facts is not None
        assert plan.evaluated is not None
        await record(conn, stage="dispatch", facts=plan.facts, run_id=step.run_id,
                     job_id=plan.job_id, attempt=plan.attempt, evaluated=plan.evaluated,
                     events=state.events)
        error = denial_error(plan.evaluated)
        constraints = dict(plan.evaluated.decision.constraints)
        await jobs_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            attempt=plan.attempt, topic=definition.topic, status=JobStatus.DENIED,
            priority=job_priority(state, definition), input=plan.input,
            upstream=plan.upstream(state),
            constraints=constraints, timeout_ms=attempt_timeout(definition, constraints),
            available_at=plan.available_at, policy_snapshot_hash=plan.evaluated.snapshot_hash,
            item_index=item.item_index)
        return await moved(items_q.transition(conn, item, StepStatus.DENIED,
                                              attempted=True, error=error))

    async def _refuse(self, conn: Conn, state: RunPass, step: StepRow,
                      error: dict[str, Any]) -> StepRow:
        """The list cannot be iterated: the step fails at once (no retry can help)."""
        await state.event(conn, "foreach.ended", step.step_id,
                          data={"status": "failed", "error": error})
        return await moved(steps_q.transition(conn, step, StepStatus.FAILED, error=error))


@dataclass
class _Plan:
    """One item attempt, rendered and decided before anything of it is written."""

    definition: StepDef
    step: StepRow
    item: ItemRow
    available_at: datetime | None
    input: Any = None
    error: dict[str, Any] | None = None  # its input could not be rendered
    facts: Facts | None = None
    evaluated: Evaluated | None = None
    gates: Gates = field(default_factory=Gates)  # the step's, then the decision's limits

    @property
    def attempt(self) -> int:
        return self.item.attempts + 1

    @property
    def job_id(self) -> str:
        return f"{self.step.run_id}:{self.step.step_id}[{self.item.item_index}]@{self.attempt}"

    @property
    def ends(self) -> bool:
        """Its input failed, or policy denied it: the item ends at dispatch."""
        return self.evaluated is None or self.evaluated.decision.verdict is Verdict.DENY

    def upstream(self, state: RunPass) -> dict[str, Any]:
        """Empty: the dependencies' outputs would copy the whole list into every item's
        job (a million elements for 1,000 items); an item's input carries what it needs."""
        return {}


def item_input(state: RunPass, definition: StepDef, item: ItemRow) -> Any:
    """An item's input: the step's ``input`` rendered with ``${item}``; without one,
    ``{"item": …, "item_index": …}`` (a worker needs nothing else to know its item)."""
    if definition.input is None:
        return {"item": item.item, "item_index": item.item_index}
    return render(dict(definition.input), run_input=state.run.input,
                  step_outputs=_outputs(state), item=Item(item.item, item.item_index))


def _outputs(state: RunPass) -> dict[str, Any]:
    return {sid: s.output for sid, s in state.steps.items() if s.status is StepStatus.SUCCEEDED}
