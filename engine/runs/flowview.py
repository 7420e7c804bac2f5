"""What a run document says about control flow (docs/workflows.md#control-flow): each
step's condition and how it came out, its trigger, a timer's fire time, the event a wait
awaits or took. The API's run document carries it as ``flow`` on each step, and the
step's ``note`` says it in words, which `warden runs show` and the operator page print.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from engine.core.enums import StepStatus, StepType, Trigger
from engine.core.errors import InvalidInput
from engine.definitions.model import WorkflowDef
from engine.definitions.templates import render
from engine.store import Conn
from engine.store import flow as flow_q
from engine.store.records import StepRow


def _has_flow(workflow: WorkflowDef) -> bool:
    return any(s.when is not None or s.trigger is not Trigger.ALL_SUCCEEDED
               or s.type in (StepType.SLEEP, StepType.WAIT_EVENT)
               for s in workflow.steps.values())


async def facts(conn: Conn, tenant_id: str, run_id: UUID, workflow: WorkflowDef,
                steps: Mapping[str, StepRow]) -> dict[str, dict[str, Any]]:
    """Per step id, the control-flow facts of the steps that have any."""
    if not _has_flow(workflow):
        return {}  # no extra query for a workflow without control flow
    found: dict[str, dict[str, Any]] = {}
    for event in await flow_q.flow_events(conn, tenant_id, run_id):
        entry = found.setdefault(event["step_id"], {})
        if event["kind"] == "step.condition":
            entry["condition"] = {"result": event["data"].get("result"),
                                  "read": event["data"].get("read", {})}
        else:
            entry["matched"] = event["data"]
    out: dict[str, dict[str, Any]] = {}
    for sid, definition in workflow.steps.items():
        entry = found.get(sid, {})
        if definition.when is not None:
            entry = {"when": definition.when, **entry}
        if definition.trigger is not Trigger.ALL_SUCCEEDED:
            entry["trigger"] = definition.trigger.value
        row = steps.get(sid)
        if definition.type is StepType.SLEEP:
            entry["timer"] = {"duration_ms": definition.duration_ms, "until": definition.until,
                              "fire_at": _time(row.wake_at if row else None)}
        elif definition.type is StepType.WAIT_EVENT:
            entry["waits_for"] = {
                "event": definition.event,
                "key": row.await_key if row and row.await_key else definition.key,
                "timeout_ms": definition.timeout_ms,
                "timeout_at": _time(row.wake_at if row else None)}
        if entry:
            out[sid] = entry
    return out


def annotate(doc: dict[str, Any], flow: dict[str, Any] | None) -> dict[str, Any]:
    """A step document with its ``flow`` and, unless it already says something (an error,
    a worker), a note in words."""
    if flow is None:
        return doc
    note = doc.get("note") or _note(doc, flow)
    return {**doc, "flow": flow, "note": note}


def _note(doc: dict[str, Any], flow: dict[str, Any]) -> str | None:
    status = doc["status"]
    condition = flow.get("condition")
    if condition is not None and status == StepStatus.SKIPPED.value:
        return f"skipped: when {flow['when']} was false ({_reads(condition['read'])})"
    if status == StepStatus.SKIPPED.value and "trigger" in flow:
        return f"skipped: no dependency succeeded (trigger {flow['trigger']})"
    if status == StepStatus.WAITING.value and "timer" in flow:
        return f"timer fires at {flow['timer']['fire_at']}"
    if status == StepStatus.WAITING.value and "waits_for" in flow:
        waits = flow["waits_for"]
        until = f" until {waits['timeout_at']}" if waits["timeout_at"] else ""
        return f"waits for event {waits['event']} with key {waits['key']!r}{until}"
    if "matched" in flow:
        matched = flow["matched"]
        return f"took event {matched['event_id']} sent by {matched['sent_by']}"
    if status == StepStatus.SUCCEEDED.value and "timer" in flow and doc.get("output"):
        return f"timer fired at {doc['output'].get('fired_at')}"
    if condition is not None:
        return f"when {flow['when']} was true ({_reads(condition['read'])})"
    if "trigger" in flow and status == StepStatus.PENDING.value:
        return f"joins on trigger {flow['trigger']}"
    return None


def rerun_notes(workflow: WorkflowDef, to_run: list[str], run_input: Any,
                reused: Mapping[str, Any]) -> dict[str, str]:
    """What each control-flow step a rerun runs again will do, for its plan."""
    notes: dict[str, str] = {}
    for sid in to_run:
        step = workflow.steps[sid]
        said: list[str] = []
        if step.when is not None:
            said.append(f"when {step.when} is evaluated again")
        if step.trigger is not Trigger.ALL_SUCCEEDED:
            said.append(f"joins on trigger {step.trigger.value}")
        if step.type is StepType.SLEEP:
            if step.until is None:
                said.append(f"sleeps {step.duration_ms} ms from its start again")
            else:
                said.append(f"sleeps until {_render(step.until, run_input, reused)}")
        elif step.type is StepType.WAIT_EVENT:
            timeout = f", for {step.timeout_ms} ms" if step.timeout_ms else ""
            key = _render(step.key or "", run_input, reused)
            said.append(f"waits again for event {step.event} with key {key!r}{timeout} "
                        "(an event still kept matches again)")
        if said:
            notes[sid] = "; ".join(said)
    return notes


def _render(template: str, run_input: Any, outputs: Mapping[str, Any]) -> str:
    try:
        value = render(template, run_input=run_input, step_outputs=outputs)
    except InvalidInput:
        return f"{template} (rendered when it begins)"
    return value if isinstance(value, str) else json.dumps(value)


def _reads(read: Mapping[str, Any]) -> str:
    if not read:
        return "read nothing"
    return ", ".join(f"{ref}={json.dumps(value, ensure_ascii=False)[:80]}"
                     for ref, value in read.items())


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat()
