"""Control flow in a scheduler pass (docs/workflows.md#control-flow): ``when:`` conditions,
``sleep`` timers and ``wait_event`` waits.

Called by engine/scheduling/scheduler.py with the run locked, so each move here happens
once however many `warden serve` processes run: a condition is evaluated by the pass that
finds the step ready, a timer fires and a wait matches by the guarded move of its step
out of ``waiting``. Every move writes its timeline event in the pass's transaction.

Timers and timeouts use the database clock (the pass's ``warden.now()``). The reaper flags
a run when one of its steps' ``wake_at`` passes (engine/daemons/reaper.py); an event
flags the runs waiting for it (warden.send_event). Neither keeps anything in memory.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from engine.core.enums import StepStatus, StepType
from engine.core.errors import Busy, InvalidInput
from engine.definitions import expressions
from engine.definitions.flowfields import parse_instant
from engine.definitions.model import StepDef
from engine.definitions.templates import render
from engine.scheduling.dispatch import RunPass, moved
from engine.store import Conn
from engine.store import flow as flow_q
from engine.store import steps as steps_q
from engine.store.records import EventRow, StepRow

TYPES = frozenset({StepType.SLEEP, StepType.WAIT_EVENT})
MAX_KEY_CHARS = 512  # events_key_length in sql/schema/95_events.sql


async def condition(conn: Conn, state: RunPass, definition: StepDef,
                    step: StepRow) -> StepRow | None:
    """Evaluates a ready step's ``when:``; None when it holds, else the ended step."""
    assert definition.when is not None
    ctx = expressions.Context(
        run_input=state.run.input,
        outputs={sid: s.output for sid, s in state.steps.items()
                 if s.status is StepStatus.SUCCEEDED},
        statuses={sid: s.status.value for sid, s in state.steps.items()})
    try:
        result = expressions.evaluate(definition.when, ctx)
    except (expressions.EvaluationError, expressions.ExpressionError) as exc:
        error = {"type": "ConditionError", "field": f"steps.{step.step_id}.when",
                 "column": exc.column, "message": exc.message, "read": ctx.read}
        return await _fail(conn, state, step, error)
    await state.event(conn, "step.condition", step.step_id, data={
        "when": definition.when, "result": result, "read": ctx.read})
    if result:
        return None
    await state.event(conn, "step.skipped", step.step_id,
                      data={"because": "condition", "when": definition.when})
    return await moved(steps_q.transition(conn, step, StepStatus.SKIPPED))


async def begin(conn: Conn, state: RunPass, definition: StepDef, step: StepRow) -> StepRow:
    """A ready sleep or wait_event step starts waiting (and may end at once)."""
    now = await state.writes.now(conn)
    try:
        if definition.type is StepType.SLEEP:
            return await _begin_sleep(conn, state, definition, step, now)
        return await _begin_wait(conn, state, definition, step, now)
    except InvalidInput as exc:
        error = {"type": "InputRenderError", "message": str(exc).split(": ", 1)[-1],
                 "field": f"steps.{step.step_id}.{exc.field}"}
        return await _fail(conn, state, step, error)


async def advance(conn: Conn, state: RunPass, definition: StepDef, step: StepRow) -> StepRow:
    """A waiting sleep or wait_event step: fire, match or time out when it is time."""
    now = await state.writes.now(conn)
    if definition.type is StepType.SLEEP:
        if step.wake_at is not None and step.wake_at <= now:
            return await _fire(conn, state, step, now)
        return step
    assert step.await_event is not None and step.await_key is not None
    assert step.started_at is not None  # set when it began waiting
    event = await flow_q.match_event(conn, step.tenant_id, step.await_event, step.await_key,
                                     step.started_at)
    if event is not None:
        return await _matched(conn, state, step, event)
    if step.wake_at is not None and step.wake_at <= now:
        error = {"type": "WaitTimedOut", "event": step.await_event, "key": step.await_key,
                 "timeout_at": step.wake_at.isoformat()}
        await state.event(conn, "wait.timed_out", step.step_id, data=error)
        return await moved(steps_q.transition(conn, step, StepStatus.TIMED_OUT, error=error))
    return step


async def _begin_sleep(conn: Conn, state: RunPass, definition: StepDef, step: StepRow,
                       now: datetime) -> StepRow:
    if definition.until is not None:
        fire_at = parse_instant(_text(state, definition.until, "until"))
    else:
        fire_at = now + timedelta(milliseconds=definition.duration_ms or 0)
    step = await moved(flow_q.begin_wait(conn, step, wake_at=fire_at))
    await state.event(conn, "timer.started", step.step_id, data={
        "fire_at": fire_at.isoformat(), "duration_ms": definition.duration_ms,
        "until": definition.until})
    if fire_at <= now:
        return await _fire(conn, state, step, now)
    return step


async def _begin_wait(conn: Conn, state: RunPass, definition: StepDef, step: StepRow,
                      now: datetime) -> StepRow:
    assert definition.event is not None and definition.key is not None
    key = _text(state, definition.key, "key")
    if len(key) > MAX_KEY_CHARS:  # no event could carry it (warden.events.key)
        raise InvalidInput("key", f"rendered to {len(key)} characters; an event key holds "
                                  f"at most {MAX_KEY_CHARS}")
    # Ordered against warden.send_event for this key: an event committed before we hold
    # the lock is found below, one sent after waits for our commit and then sees the step
    # waiting. Tried only: we hold run locks send_event may wait for (docs/design.md).
    if not await flow_q.try_event_lock(conn, step.tenant_id, definition.event, key):
        raise Busy(f"an event {definition.event!r} for key {key!r} is being recorded")
    timeout_at = now + timedelta(milliseconds=definition.timeout_ms) \
        if definition.timeout_ms is not None else None
    step = await moved(flow_q.begin_wait(conn, step, wake_at=timeout_at,
                                         await_event=definition.event, await_key=key))
    await state.event(conn, "wait.started", step.step_id, data={
        "event": definition.event, "key": key,
        "timeout_at": None if timeout_at is None else timeout_at.isoformat()})
    return await advance(conn, state, definition, step)


async def _fire(conn: Conn, state: RunPass, step: StepRow, now: datetime) -> StepRow:
    assert step.wake_at is not None
    output = {"fire_at": step.wake_at.isoformat(), "fired_at": now.isoformat()}
    await state.event(conn, "timer.fired", step.step_id, data=output)
    return await moved(steps_q.transition(conn, step, StepStatus.SUCCEEDED, output=output))


async def _matched(conn: Conn, state: RunPass, step: StepRow, event: EventRow) -> StepRow:
    await state.event(conn, "wait.matched", step.step_id, data={
        "event_id": event.event_id, "event": event.name, "key": event.key,
        "sent_by": event.sent_by, "received_at": event.received_at.isoformat()})
    # jsonb null cannot be told from "no output": an event without data gives {}
    output = {} if event.data is None else event.data
    return await moved(steps_q.transition(conn, step, StepStatus.SUCCEEDED, output=output))


async def _fail(conn: Conn, state: RunPass, step: StepRow, error: dict[str, Any]) -> StepRow:
    await state.event(conn, "step.failed", step.step_id, data={"error": error})
    return await moved(steps_q.transition(conn, step, StepStatus.FAILED, error=error))


def _text(state: RunPass, template: str, field: str) -> str:
    """A template field rendered to text; a number is written as JSON writes it."""
    outputs = {sid: s.output for sid, s in state.steps.items()
               if s.status is StepStatus.SUCCEEDED}
    try:
        value = render(template, run_input=state.run.input, step_outputs=outputs)
    except InvalidInput as exc:
        raise InvalidInput(field, str(exc)) from exc
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)
    raise InvalidInput(field, f"{template[:60]!r} came to {json.dumps(value)[:60]}, "
                              "not a string")
