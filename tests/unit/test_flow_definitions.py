"""when:, trigger:, sleep and wait_event in definitions (engine/definitions/flowfields.py)
and what the DAG logic makes of triggers (engine/definitions/dag.py)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core import settings
from engine.core.enums import StepStatus, StepType, Trigger
from engine.core.errors import ConfigError, InvalidDefinition
from engine.definitions import dag
from engine.definitions.model import WorkflowDef, parse_workflow_doc


def doc(**steps: dict[str, Any]) -> dict[str, Any]:
    return {"id": "w", "name": "w", "version": "1.0.0", "steps": steps}


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        parse_workflow_doc(document)
    return [str(p) for p in caught.value.problems]


JOB = {"type": "job", "topic": "t"}


def test_flow_fields_parse_and_round_trip() -> None:
    workflow = parse_workflow_doc(doc(
        a=JOB,
        b={**JOB, "depends_on": ["a"], "when": "steps.a.output.n > 1"},
        nap={"type": "sleep", "duration_ms": 1000, "depends_on": ["a"]},
        until={"type": "sleep", "until": "${input.at}"},
        wait={"type": "wait_event", "event": "ticket.approved", "key": "${input.id}",
              "timeout_ms": 5000, "depends_on": ["b", "nap"], "trigger": "any_succeeded"},
        fixed={"type": "sleep", "until": "2030-01-01T00:00:00Z", "trigger": "all_done",
               "depends_on": ["wait"]}))
    steps = workflow.steps
    assert steps["b"].when == "steps.a.output.n > 1"
    assert steps["nap"].type is StepType.SLEEP and steps["nap"].duration_ms == 1000
    assert steps["wait"].trigger is Trigger.ANY_SUCCEEDED
    assert (steps["wait"].event, steps["wait"].key, steps["wait"].timeout_ms) == (
        "ticket.approved", "${input.id}", 5000)
    assert WorkflowDef.from_doc(workflow.to_doc()) == workflow
    assert "trigger" not in workflow.to_doc()["steps"]["a"]  # defaults stay out


def test_definitions_without_flow_fields_keep_their_canonical_form() -> None:
    document = parse_workflow_doc(doc(a=JOB)).to_doc()
    assert set(document["steps"]["a"]) == {"type", "depends_on", "topic", "input",
                                           "timeout_ms", "retries", "priority", "meta"}


@pytest.mark.parametrize(("steps", "expected"), [
    ({"a": {**JOB, "when": "input.x = 1"}},
     "steps.a.when: column 9: '=' is not an operator; compare with '=='"),
    ({"a": {**JOB, "when": "(input.x == 1"}},
     "steps.a.when: column 14: expected ')', found the end of the expression to close '(' "
     "at column 1"),
    ({"a": JOB, "b": {**JOB, "when": "steps.a.output.x == 1"}},
     "steps.b.when: column 1: steps.a.output.x refers to step 'a', which is not an "
     "ancestor of 'b'"),
    ({"a": {**JOB, "when": "input.x == 1 and steps.zz.status == 'failed'"}},
     "steps.a.when: column 18: steps.zz.status refers to unknown step 'zz'"),
    ({"a": {**JOB, "when": "steps.a.status == 'running'"}},
     "steps.a.when: column 1: steps.a.status refers to step 'a' itself"),
    ({"a": {**JOB, "when": 5}}, "steps.a.when: must be a string, got 5 (a number)"),
    ({"a": {**JOB, "when": ""}}, "steps.a.when: must not be empty"),
    ({"a": {**JOB, "trigger": "some_succeeded"}},
     "steps.a.trigger: unknown trigger 'some_succeeded' (a string) (allowed: all_succeeded, "
     "any_succeeded, all_done)"),
    ({"a": {"type": "sleep"}},
     "steps.a: a sleep step needs exactly one of 'duration_ms' or 'until'"),
    ({"a": {"type": "sleep", "duration_ms": 5, "until": "2030-01-01T00:00:00Z"}},
     "steps.a: a sleep step needs exactly one of 'duration_ms' or 'until', not both"),
    ({"a": {"type": "sleep", "duration_ms": -1}},
     "steps.a.duration_ms: must be between 0 and 31622400000, got -1"),
    ({"a": {"type": "sleep", "until": "2030-01-01"}},
     "steps.a.until: '2030-01-01' is not an RFC 3339 timestamp with an offset "
     "(e.g. 2026-01-31T09:00:00Z)"),
    ({"a": {"type": "sleep", "until": "2030-01-01T00:00:00"}},
     "steps.a.until: '2030-01-01T00:00:00' is not an RFC 3339 timestamp with an offset"),
    ({"a": {"type": "sleep", "until": "${steps.b.output.at}"}, "b": JOB},
     "steps.a.until: ${steps.b.output.at} refers to step 'b', which is not an ancestor"),
    ({"a": {"type": "sleep", "duration_ms": 1, "topic": "t"}},
     "steps.a.topic: 'topic' is only allowed on job steps; this is a step of type 'sleep'"),
    ({"a": {"type": "wait_event", "key": "k"}},
     "steps.a.event: missing required field 'event'"),
    ({"a": {"type": "wait_event", "event": "e"}}, "steps.a.key: missing required field 'key'"),
    ({"a": {"type": "wait_event", "event": "bad name", "key": "k"}},
     "steps.a.event: 'bad name' is not a valid event name"),
    ({"a": {"type": "wait_event", "event": "e", "key": "${input"}},
     "steps.a.key: ${input: unterminated '${' (no closing '}')"),
    ({"a": {"type": "wait_event", "event": "e", "key": "k", "timeout_ms": 0}},
     "steps.a.timeout_ms: must be between 1 and"),
    ({"a": {"type": "wait_event", "event": "e", "key": "k", "duration_ms": 5}},
     "steps.a.duration_ms: 'duration_ms' is only allowed on sleep steps; this is a step "
     "of type 'wait_event'"),
    ({"a": {**JOB, "event": "e"}},
     "steps.a.event: 'event' is only allowed on wait_event steps"),
    ({"a": {"type": "approval", "timeout_ms": 5}},
     "steps.a.timeout_ms: 'timeout_ms' is only allowed on job steps; this is a step of "
     "type 'approval'"),
])
def test_bad_flow_definitions_are_refused_precisely(steps: dict[str, Any], expected: str
                                                    ) -> None:
    found = problems(doc(**steps))
    assert any(p.startswith(expected) for p in found), found


def test_the_event_keep_setting() -> None:
    assert settings.load({}).event_keep_ms == 86_400_000
    assert settings.load({"WARDEN_EVENT_KEEP_MS": "0"}).event_keep_ms == 0
    for raw in ("-1", "a day", str(31 * 86_400_000)):
        with pytest.raises(ConfigError, match="WARDEN_EVENT_KEEP_MS"):
            settings.load({"WARDEN_EVENT_KEEP_MS": raw})


# ---------------------------------------------------------------- triggers in the DAG

def _states(**given: StepStatus) -> dict[str, dag.StepState]:
    return {sid: dag.StepState(status, 0, None) for sid, status in given.items()}


def _join(trigger: str) -> WorkflowDef:
    return parse_workflow_doc(doc(a=JOB, b=JOB, j={**JOB, "depends_on": ["a", "b"],
                                                     "trigger": trigger}))


S = StepStatus


@pytest.mark.parametrize(("trigger", "a", "b", "expected"), [
    ("all_succeeded", S.SUCCEEDED, S.SUCCEEDED, dag.Ready("j")),
    ("all_succeeded", S.SUCCEEDED, S.SKIPPED, dag.Skip("j", "b")),
    ("all_succeeded", S.FAILED, S.RUNNING, dag.Skip("j", "a")),  # today's: at once
    ("any_succeeded", S.SUCCEEDED, S.RUNNING, None),  # waits for every dependency
    ("any_succeeded", S.SUCCEEDED, S.SKIPPED, dag.Ready("j")),
    ("any_succeeded", S.FAILED, S.SUCCEEDED, dag.Ready("j")),
    ("any_succeeded", S.FAILED, S.SKIPPED, dag.Skip("j", "no dependency succeeded")),
    ("all_done", S.FAILED, S.RUNNING, None),
    ("all_done", S.FAILED, S.TIMED_OUT, dag.Ready("j")),
    ("all_done", S.DENIED, S.SKIPPED, dag.Ready("j")),
])
def test_triggers(trigger: str, a: StepStatus, b: StepStatus, expected: dag.Action | None
                  ) -> None:
    states = _states(a=a, b=b, j=S.PENDING)
    assert dag.next_action(_join(trigger), states) == expected


def test_run_status_still_reports_what_happened() -> None:
    # a skipped branch joined by any_succeeded: the run succeeded
    assert dag.run_status(_states(a=S.SUCCEEDED, b=S.SKIPPED, j=S.SUCCEEDED)) \
        is dag.RunStatus.SUCCEEDED
    # a failure followed by an all_done clean-up that succeeded: the run failed
    assert dag.run_status(_states(a=S.FAILED, b=S.SUCCEEDED, j=S.SUCCEEDED)) \
        is dag.RunStatus.FAILED
    assert dag.run_status(_states(a=S.DENIED, b=S.FAILED, j=S.SUCCEEDED)) \
        is dag.RunStatus.DENIED
