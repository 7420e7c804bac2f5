"""What a run should do next, decided from its definition and its steps' states alone.

Pure functions, no I/O: the scheduler loads the states, asks `next_action` until it
answers None (applying each action and updating the states in between), then asks
`run_status` what the run's status now is. Keeping the rules here makes them testable
without a database and keeps the scheduler a thin applier of decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from engine.core.enums import RunStatus, StepStatus, Trigger
from engine.definitions.model import StepDef, WorkflowDef

# A step whose dependency ended in one of these can never run: it is skipped.
_BLOCKING = frozenset({StepStatus.FAILED, StepStatus.DENIED, StepStatus.CANCELLED,
                       StepStatus.TIMED_OUT, StepStatus.SKIPPED})

# When every step is final, the run's status is the first of these that some step has;
# a run with none of them succeeded. Denial outranks failure: it is the answer an
# operator must see first (a policy or a person said no), and it is never "failed".
_OUTCOME_PRECEDENCE = (
    (StepStatus.DENIED, RunStatus.DENIED),
    (StepStatus.FAILED, RunStatus.FAILED),
    (StepStatus.TIMED_OUT, RunStatus.TIMED_OUT),
    (StepStatus.CANCELLED, RunStatus.CANCELLED),
)


@dataclass(frozen=True)
class StepState:
    status: StepStatus
    attempts: int
    retry_at: datetime | None


@dataclass(frozen=True)
class Skip:
    step_id: str
    because: str  # the dependency that did not succeed


@dataclass(frozen=True)
class Ready:
    step_id: str  # all dependencies succeeded: dispatch by the step's type


@dataclass(frozen=True)
class Retry:
    step_id: str  # a failed attempt asked for another one at available_at
    attempt: int
    available_at: datetime


Action = Skip | Ready | Retry


def next_action(workflow: WorkflowDef, states: Mapping[str, StepState]) -> Action | None:
    """The first thing to do, in topological order, or None when the run must wait."""
    for step_id, step in workflow.steps.items():
        state = states[step_id]
        if state.status is StepStatus.PENDING:
            if (action := _pending(step, states)) is not None:
                return action
        elif state.status is StepStatus.RUNNING and state.retry_at is not None:
            return Retry(step_id, state.attempts + 1, state.retry_at)
    return None


def _pending(step: StepDef, states: Mapping[str, StepState]) -> Action | None:
    """What a pending step's trigger makes of its dependencies' statuses."""
    deps = [states[d].status for d in step.depends_on]
    if step.trigger is Trigger.ALL_SUCCEEDED:
        blocked_by = next((d for d in step.depends_on if states[d].status in _BLOCKING), None)
        if blocked_by is not None:
            return Skip(step.id, blocked_by)
        if all(status is StepStatus.SUCCEEDED for status in deps):
            return Ready(step.id)
        return None
    if not all(status.is_final for status in deps):
        return None
    if step.trigger is Trigger.ANY_SUCCEEDED and deps \
            and StepStatus.SUCCEEDED not in deps:
        return Skip(step.id, "no dependency succeeded")
    return Ready(step.id)


def run_status(states: Mapping[str, StepState]) -> RunStatus:
    """The run's status once no action is left: final, waiting, or running."""
    statuses = {state.status for state in states.values()}
    if all(status.is_final for status in statuses):
        for step_status, outcome in _OUTCOME_PRECEDENCE:
            if step_status in statuses:
                return outcome
        return RunStatus.SUCCEEDED
    if StepStatus.WAITING in statuses and StepStatus.RUNNING not in statuses:
        return RunStatus.WAITING
    return RunStatus.RUNNING


def sink_steps(workflow: WorkflowDef) -> list[str]:
    """Steps nothing depends on: their outputs form the run's output."""
    needed = {dep for step in workflow.steps.values() for dep in step.depends_on}
    return [step_id for step_id in workflow.steps if step_id not in needed]
