"""`workflow` steps (docs/workflows.md#sub-workflows): a child run per attempt.

When a workflow step becomes ready (or each of its for_each items is due), its parent's
scheduler pass starts a child run through the same code as any start
(engine.runs.lifecycle.created: the steps, run.created, the submit gate), pinned to the
version resolved when the root run started (engine.runs.subflows), in the parent's
tenant, started by the parent's starter (who therefore may not decide its approvals
either). The child records parent_run_id, parent_step_id, the item and the attempt; the
unique index runs_one_child_per_attempt makes a second start of the same attempt fail,
whichever scheduler tries it, and the parent's run lock makes that never happen in the
first place.

A child that ends wakes its parent (engine.scheduling.scheduler); the parent's pass then
maps the child's status onto the step or item: succeeded takes the child's output;
failed or timed out starts a new child while the step's retries last; otherwise the step
ends with the child's status. Cancelling the parent cancels its children, down to their
running jobs (engine.runs.stopping).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.core.enums import RunStatus, StepStatus
from engine.core.errors import InvalidInput, InvalidTransition
from engine.definitions.model import StepDef
from engine.definitions.templates import Item, render
from engine.runs import lifecycle, stopping
from engine.runs.services import Services
from engine.scheduling.dispatch import RunPass, moved
from engine.store import Conn
from engine.store import items as items_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store.records import ItemRow, RunRow, StepRow
from engine.store.runs import Parent

_ENDS = {RunStatus.FAILED: StepStatus.FAILED, RunStatus.TIMED_OUT: StepStatus.TIMED_OUT,
         RunStatus.DENIED: StepStatus.DENIED, RunStatus.CANCELLED: StepStatus.CANCELLED}
# a child that ended so is started again while retries last; denial and cancellation are
# decisions, not accidents
_RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})

async def start_for_step(svc: Services, conn: Conn, state: RunPass, definition: StepDef,
                         step: StepRow) -> StepRow:
    """The step is ready, or its last child ended and a retry is left: a new child."""
    attempt = step.attempts + 1
    try:
        child_input = _input(state, definition, None)
    except InvalidInput as exc:
        error = {"type": "InputRenderError", "message": str(exc), "field": exc.field}
        await state.event(conn, "child.ended", step.step_id, attempt=attempt,
                          data={"status": "failed", "error": error, "started": False})
        return await moved(steps_q.transition(conn, step, StepStatus.FAILED, error=error))
    child = await _start(svc, conn, state, definition, step, child_input, None, attempt)
    step = await moved(steps_q.start_attempt(conn, step))
    if child.status.is_final:  # denied at its submit gate
        return await _settle_step(svc, conn, state, definition, step, child)
    return step


async def start_for_item(svc: Services, conn: Conn, state: RunPass, definition: StepDef,
                         step: StepRow, item: ItemRow) -> ItemRow:
    """A for_each item of a workflow step is due: its child."""
    attempt = item.attempts + 1
    try:
        child_input = _input(state, definition, item)
    except InvalidInput as exc:
        error = {"type": "InputRenderError", "message": str(exc), "field": exc.field}
        await state.event(conn, "child.ended", step.step_id, attempt=attempt, data={
            "status": "failed", "error": error, "started": False,
            "item_index": item.item_index})
        return await moved(items_q.transition(conn, item, StepStatus.FAILED, attempted=True,
                                              error=error))
    child = await _start(svc, conn, state, definition, step, child_input, item.item_index,
                         attempt)
    if item.status is StepStatus.PENDING:
        item = await moved(items_q.transition(conn, item, StepStatus.RUNNING, attempted=True))
    else:
        started = await items_q.start_attempts(conn, [items_q.ItemStart(
            item.tenant_id, item.run_id, item.step_id, item.item_index, item.attempts, None)])
        assert started == 1, "an item changed under the scheduler's run lock"
        item = replace(item, attempts=attempt)
    if child.status.is_final:
        return await settle_item(svc, conn, state, definition, step, item, child)
    return item


async def advance_step(svc: Services, conn: Conn, state: RunPass, definition: StepDef,
                       step: StepRow, child: RunRow | None) -> StepRow:
    """A running workflow step (no for_each): settle it once its child has ended."""
    if child is None or not child.status.is_final or child.parent_attempt != step.attempts:
        return step
    return await _settle_step(svc, conn, state, definition, step, child)


async def settle_item(svc: Services, conn: Conn, state: RunPass, definition: StepDef,
                      step: StepRow, item: ItemRow, child: RunRow | None) -> ItemRow:
    """A running item of a workflow for_each step: settled once its child has ended."""
    if (item.status is not StepStatus.RUNNING or child is None
            or not child.status.is_final or child.parent_attempt != item.attempts):
        return item
    await _ended_event(conn, state, step, child)
    if child.status is RunStatus.SUCCEEDED:
        return await moved(items_q.transition(conn, item, StepStatus.SUCCEEDED,
                                              output=_output(child)))
    if child.status in _RETRYABLE and item.attempts < item.max_attempts:
        return await start_for_item(svc, conn, state, definition, step, item)
    return await moved(items_q.transition(conn, item, _ENDS[child.status],
                                          error=_child_error(child)))


async def cancel_of_step(conn: Conn, state: RunPass, step: StepRow,
                         reason: dict[str, Any]) -> int:
    """Ends the open children of a step whose outcome is decided; how many. Each child is
    locked NOWAIT (its own pass may hold it and wait for this parent: a cycle)."""
    ended = 0
    for child in await runs_q.children_of_run(conn, step.tenant_id, step.run_id):
        if child.parent_step_id != step.step_id or child.status.is_final:
            continue
        try:
            await stopping.end_tree(conn, child, stopping.CANCELLED, by="scheduler",
                                    nowait=True, wake_parent=False, error={
                                        **reason, "type": "ParentStepEnded",
                                        "parent_run_id": str(step.run_id),
                                        "parent_step_id": step.step_id})
        except InvalidTransition:
            continue  # it ended meanwhile
        ended += 1
    return ended


# ------------------------------------------------------------ internals

async def _start(svc: Services, conn: Conn, state: RunPass, definition: StepDef,
                 step: StepRow, child_input: dict[str, Any], item_index: int | None,
                 attempt: int) -> RunRow:
    run = state.run
    pin = (run.pins or {}).get(step.step_id)
    if pin is None:  # a run stored before its workflow had this step cannot have one
        raise InvalidInput(f"steps.{step.step_id}.workflow",
                           f"run {run.run_id} has no pinned version for step {step.step_id}")
    workflow = await svc.definitions.get(conn, run.tenant_id, pin["workflow"], pin["version"])
    child = await runs_q.insert(
        conn, tenant_id=run.tenant_id, workflow_id=workflow.id,
        workflow_version=workflow.version, input=child_input, idempotency_key=None,
        request_digest="child", rerun_of=None, created_by=run.created_by,
        timeout_ms=workflow.timeout_ms, pins=pin.get("pins") or {},
        parent=Parent(run.run_id, step.step_id, item_index, attempt, run.depth + 1))
    assert child is not None  # no idempotency key: nothing can conflict but a bug
    child = await lifecycle.created(svc, conn, child, workflow, {
        "parent_run_id": str(run.run_id), "parent_step_id": step.step_id,
        "parent_item_index": item_index, "parent_attempt": attempt})
    await state.event(conn, "child.started", step.step_id, attempt=attempt, data={
        "child_run_id": str(child.run_id), "workflow_id": workflow.id,
        "version": workflow.version, "item_index": item_index, "status": child.status.value})
    return child


async def _settle_step(svc: Services, conn: Conn, state: RunPass, definition: StepDef,
                       step: StepRow, child: RunRow) -> StepRow:
    await _ended_event(conn, state, step, child)
    if child.status is RunStatus.SUCCEEDED:
        return await moved(steps_q.transition(conn, step, StepStatus.SUCCEEDED,
                                              output=_output(child)))
    if child.status in _RETRYABLE and step.attempts < step.max_attempts:
        return await start_for_step(svc, conn, state, definition, step)
    return await moved(steps_q.transition(conn, step, _ENDS[child.status],
                                          error=_child_error(child)))


async def _ended_event(conn: Conn, state: RunPass, step: StepRow, child: RunRow) -> None:
    await state.event(conn, "child.ended", step.step_id, attempt=child.parent_attempt, data={
        "child_run_id": str(child.run_id), "status": child.status.value,
        "item_index": child.parent_item_index})


def _input(state: RunPass, definition: StepDef, item: ItemRow | None) -> dict[str, Any]:
    """The child's input: the step's ``input`` rendered (with ``${item}`` in a for_each);
    without one, the parent's input (or ``{"item", "item_index"}`` for an item)."""
    if definition.input is None:
        value: Any = (state.run.input if item is None
                      else {"item": item.item, "item_index": item.item_index})
    else:
        outputs = {sid: s.output for sid, s in state.steps.items()
                   if s.status is StepStatus.SUCCEEDED}
        value = render(dict(definition.input), run_input=state.run.input,
                       step_outputs=outputs,
                       item=None if item is None else Item(item.item, item.item_index))
    try:
        return lifecycle.check_input(value)
    except InvalidInput as exc:
        raise InvalidInput("input", f"a child run's input {exc}") from exc


def _output(child: RunRow) -> Any:
    return child.output if child.output is not None else {}


def _child_error(child: RunRow) -> dict[str, Any]:
    return {"type": "ChildRunEnded", "child_run_id": str(child.run_id),
            "status": child.status.value, "error": child.error}


def declared_output(state: RunPass, error: Any) -> tuple[Any, Any]:
    """A workflow's ``output:`` mapping rendered over its steps' outputs (a step that did
    not succeed has none: a reference to it is an OutputRenderError in the run's error,
    and the run's output is then null)."""
    assert state.workflow.output is not None
    outputs = {sid: s.output for sid, s in state.steps.items()
               if s.status is StepStatus.SUCCEEDED}
    try:
        return render(dict(state.workflow.output), run_input=state.run.input,
                      step_outputs=outputs), error
    except InvalidInput as exc:
        return None, {**(error or {}), "output": {
            "type": "OutputRenderError", "message": str(exc), "field": exc.field}}
