"""The pure decisions of engine/dag.py: what a run does next, and what its status is.

The scheduler asks `next_action` until it answers None, applying each action in between;
`drive` below does the same with the transitions the scheduler makes (a ready job step
starts running, a ready approval waits, a skip skips), so a test can ask "what does one
scheduler pass do from here".
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from engine.core.enums import RunStatus, StepStatus, StepType
from engine.definitions.dag import (
    Ready,
    Retry,
    Skip,
    StepState,
    next_action,
    run_status,
    sink_steps,
)
from engine.definitions.model import WorkflowDef, parse_workflow

S = StepStatus
T0 = datetime(2026, 1, 1, tzinfo=UTC)

FAN_OUT = """
id: fan
name: fan
version: 1.0.0
steps:
  root: {type: job, topic: t}
  f1: {type: job, topic: t, depends_on: [root]}
  f2: {type: job, topic: t, depends_on: [root]}
  f3: {type: job, topic: t, depends_on: [root]}
  join: {type: job, topic: t, depends_on: [f1, f2, f3]}
"""

CHAIN = """
id: chain
name: chain
version: 1.0.0
steps:
  a: {type: job, topic: t}
  b: {type: job, topic: t, depends_on: [a]}
  c: {type: job, topic: t, depends_on: [b]}
"""

GATED = """
id: gated
name: gated
version: 1.0.0
steps:
  plan: {type: job, topic: t}
  gate: {type: approval, depends_on: [plan]}
  side: {type: job, topic: t, depends_on: [plan]}
  apply: {type: job, topic: t, depends_on: [gate]}
  tell: {type: notify, depends_on: [apply]}
"""

BLOCKING = (S.FAILED, S.DENIED, S.TIMED_OUT, S.CANCELLED, S.SKIPPED)
IN_PROGRESS = (S.RUNNING, S.WAITING)


def st(status: StepStatus, attempts: int = 0, retry_at: datetime | None = None) -> StepState:
    return StepState(status, attempts, retry_at)


def states(workflow: WorkflowDef, **given: StepStatus | StepState) -> dict[str, StepState]:
    """Every step pending, except those given."""
    result = {sid: st(S.PENDING) for sid in workflow.steps}
    for sid, value in given.items():
        assert sid in result, sid
        result[sid] = value if isinstance(value, StepState) else st(value)
    return result


def drive(workflow: WorkflowDef, current: Mapping[str, StepState]
          ) -> tuple[list[Ready | Skip | Retry], dict[str, StepState]]:
    """One scheduler pass: every action until None, each applied as the scheduler does."""
    now = dict(current)
    actions: list[Ready | Skip | Retry] = []
    for _ in range(3 * len(workflow.steps) + 1):
        action = next_action(workflow, now)
        if action is None:
            return actions, now
        actions.append(action)
        old = now[action.step_id]
        if isinstance(action, Skip):
            now[action.step_id] = st(S.SKIPPED)
        elif isinstance(action, Retry):  # the next attempt is dispatched; retry_at cleared
            now[action.step_id] = st(S.RUNNING, action.attempt)
        elif workflow.steps[action.step_id].type is StepType.APPROVAL:
            now[action.step_id] = st(S.WAITING)
        elif workflow.steps[action.step_id].type is StepType.NOTIFY:
            now[action.step_id] = st(S.SUCCEEDED)
        else:
            now[action.step_id] = st(S.RUNNING, old.attempts + 1)
    raise AssertionError(f"next_action did not settle: {actions}")


@pytest.fixture(scope="module")
def fan() -> WorkflowDef:
    return parse_workflow(FAN_OUT)


@pytest.fixture(scope="module")
def chain() -> WorkflowDef:
    return parse_workflow(CHAIN)


@pytest.fixture(scope="module")
def gated() -> WorkflowDef:
    return parse_workflow(GATED)


# ------------------------------------------------------------------ readiness and fan-out

def test_a_fresh_run_starts_with_its_roots_only(fan: WorkflowDef) -> None:
    assert next_action(fan, states(fan)) == Ready("root")
    actions, after = drive(fan, states(fan))
    assert actions == [Ready("root")]
    assert after["root"] == st(S.RUNNING, 1)
    assert run_status(after) is RunStatus.RUNNING


def test_nothing_is_ready_while_a_dependency_is_still_in_progress(fan: WorkflowDef) -> None:
    for status in IN_PROGRESS:
        assert next_action(fan, states(fan, root=status)) is None, status
    # a pending dependency is neither ready for its dependents nor blocking them
    current = states(fan, root=S.SUCCEEDED, f1=S.SUCCEEDED, f2=S.SUCCEEDED)
    assert drive(fan, current)[0] == [Ready("f3")]


def test_a_succeeded_root_makes_every_branch_ready_in_one_pass(fan: WorkflowDef) -> None:
    assert next_action(fan, states(fan, root=S.SUCCEEDED)) == Ready("f1")
    actions, after = drive(fan, states(fan, root=S.SUCCEEDED))
    assert actions == [Ready("f1"), Ready("f2"), Ready("f3")]
    assert [after[f].status for f in ("f1", "f2", "f3")] == [S.RUNNING] * 3
    assert after["join"].status is S.PENDING


def test_the_join_waits_for_every_branch_to_succeed(fan: WorkflowDef) -> None:
    for pending in ("f1", "f2", "f3"):
        for status in IN_PROGRESS:
            given = {f: S.SUCCEEDED for f in ("root", "f1", "f2", "f3")} | {pending: status}
            assert next_action(fan, states(fan, **given)) is None, (pending, status)
    done = states(fan, root=S.SUCCEEDED, f1=S.SUCCEEDED, f2=S.SUCCEEDED, f3=S.SUCCEEDED)
    assert next_action(fan, done) == Ready("join")


def test_readiness_is_the_same_for_approval_and_notify_steps(gated: WorkflowDef) -> None:
    actions, after = drive(gated, states(gated, plan=S.SUCCEEDED))
    assert actions == [Ready("gate"), Ready("side")]  # topological, definition order
    assert after["gate"].status is S.WAITING
    actions, after = drive(gated, states(gated, plan=S.SUCCEEDED, gate=S.SUCCEEDED,
                                         side=S.SUCCEEDED, apply=S.SUCCEEDED))
    assert actions == [Ready("tell")]
    assert run_status(after) is RunStatus.SUCCEEDED


def test_a_whole_run_driven_to_success(fan: WorkflowDef) -> None:
    """Every job step succeeds as soon as it runs: the passes walk the graph level by
    level and the run ends succeeded."""
    current = states(fan)
    levels = []
    while run_status(current) is not RunStatus.SUCCEEDED:
        actions, current = drive(fan, current)
        levels.append([a.step_id for a in actions])
        current = {sid: st(S.SUCCEEDED, s.attempts) if s.status is S.RUNNING else s
                   for sid, s in current.items()}
        assert len(levels) <= 3
    assert levels == [["root"], ["f1", "f2", "f3"], ["join"]]


# ------------------------------------------------------------------ skips

@pytest.mark.parametrize("blocking", BLOCKING)
def test_a_step_whose_dependency_did_not_succeed_is_skipped(chain: WorkflowDef,
                                                            blocking: StepStatus) -> None:
    assert next_action(chain, states(chain, a=blocking)) == Skip("b", because="a")


@pytest.mark.parametrize("blocking", BLOCKING)
def test_a_skip_propagates_to_every_descendant(chain: WorkflowDef, blocking: StepStatus) -> None:
    actions, after = drive(chain, states(chain, a=blocking))
    assert actions == [Skip("b", because="a"), Skip("c", because="b")]
    assert after["a"].status is blocking
    assert run_status(after) is {S.FAILED: RunStatus.FAILED, S.DENIED: RunStatus.DENIED,
                                 S.TIMED_OUT: RunStatus.TIMED_OUT,
                                 S.CANCELLED: RunStatus.CANCELLED,
                                 S.SKIPPED: RunStatus.SUCCEEDED}[blocking]


@pytest.mark.parametrize("status", IN_PROGRESS)
def test_a_join_is_skipped_at_once_even_while_other_branches_run(fan: WorkflowDef,
                                                                 status: StepStatus) -> None:
    current = states(fan, root=S.SUCCEEDED, f1=S.SUCCEEDED, f2=S.FAILED, f3=status)
    actions, after = drive(fan, current)
    assert actions == [Skip("join", because="f2")]
    # the run is not over while f3 is still in progress, though a step failed
    assert run_status(after) is (RunStatus.WAITING if status is S.WAITING
                                 else RunStatus.RUNNING)


def test_the_skip_names_the_first_blocking_dependency_in_depends_on_order(
        fan: WorkflowDef) -> None:
    current = states(fan, root=S.SUCCEEDED, f1=S.SUCCEEDED, f2=S.DENIED, f3=S.FAILED)
    assert next_action(fan, current) == Skip("join", because="f2")


def test_a_failed_branch_does_not_stop_its_siblings(fan: WorkflowDef) -> None:
    """Siblings share only the root: one failing never skips the others."""
    current = states(fan, root=S.SUCCEEDED, f1=S.FAILED)
    actions, after = drive(fan, current)
    assert actions == [Ready("f2"), Ready("f3"), Skip("join", because="f1")]
    assert run_status(after) is RunStatus.RUNNING


def test_a_denied_approval_skips_only_what_depends_on_it(gated: WorkflowDef) -> None:
    actions, after = drive(gated, states(gated, plan=S.SUCCEEDED, gate=S.DENIED))
    assert actions == [Ready("side"), Skip("apply", because="gate"),
                       Skip("tell", because="apply")]
    assert run_status(after) is RunStatus.RUNNING  # side still runs
    after["side"] = st(S.SUCCEEDED, 1)
    assert next_action(gated, after) is None
    assert run_status(after) is RunStatus.DENIED


# ------------------------------------------------------------------ retries

def test_a_running_step_with_retry_at_asks_for_its_next_attempt(chain: WorkflowDef) -> None:
    at = T0 + timedelta(seconds=5)
    current = states(chain, a=st(S.RUNNING, 2, retry_at=at))
    assert next_action(chain, current) == Retry("a", attempt=3, available_at=at)
    actions, after = drive(chain, current)
    assert actions == [Retry("a", 3, at)]
    assert after["a"] == st(S.RUNNING, 3)


def test_a_running_step_without_retry_at_needs_nothing(chain: WorkflowDef) -> None:
    assert next_action(chain, states(chain, a=st(S.RUNNING, 1))) is None


def test_retry_at_is_ignored_unless_the_step_is_running(chain: WorkflowDef) -> None:
    for status in (S.PENDING, S.WAITING, *BLOCKING, S.SUCCEEDED):
        current = states(chain, a=st(status, 1, retry_at=T0))
        action = next_action(chain, current)
        assert not isinstance(action, Retry), (status, action)


def test_retries_come_in_topological_order_with_the_other_actions(fan: WorkflowDef) -> None:
    current = states(fan, root=S.SUCCEEDED, f1=st(S.SUCCEEDED, 1),
                     f2=st(S.RUNNING, 1, retry_at=T0), f3=st(S.RUNNING, 4, retry_at=T0))
    actions, _ = drive(fan, current)
    assert actions == [Retry("f2", 2, T0), Retry("f3", 5, T0)]
    current = states(fan, root=st(S.RUNNING, 1, retry_at=T0))
    assert drive(fan, current)[0] == [Retry("root", 2, T0)]  # nothing downstream is ready


# ------------------------------------------------------------------ approvals

def test_a_waiting_approval_holds_its_dependents(gated: WorkflowDef) -> None:
    current = states(gated, plan=S.SUCCEEDED, gate=S.WAITING, side=S.SUCCEEDED)
    assert next_action(gated, current) is None
    assert run_status(current) is RunStatus.WAITING


def test_waiting_becomes_running_while_another_step_runs(gated: WorkflowDef) -> None:
    current = states(gated, plan=S.SUCCEEDED, gate=S.WAITING, side=S.RUNNING)
    assert run_status(current) is RunStatus.RUNNING
    current["side"] = st(S.RUNNING, 1, retry_at=T0)  # a retry pending is still running
    assert run_status(current) is RunStatus.RUNNING


def test_an_approved_gate_lets_the_rest_run(gated: WorkflowDef) -> None:
    current = states(gated, plan=S.SUCCEEDED, gate=S.SUCCEEDED, side=S.SUCCEEDED)
    actions, after = drive(gated, current)
    assert actions == [Ready("apply")]
    assert run_status(after) is RunStatus.RUNNING


# ------------------------------------------------------------------ run status

OUTCOMES = {S.DENIED: RunStatus.DENIED, S.FAILED: RunStatus.FAILED,
            S.TIMED_OUT: RunStatus.TIMED_OUT, S.CANCELLED: RunStatus.CANCELLED}
PRECEDENCE = [S.DENIED, S.FAILED, S.TIMED_OUT, S.CANCELLED]


def _combinations() -> list[tuple[StepStatus, ...]]:
    return [combo for n in range(1, len(PRECEDENCE) + 1)
            for combo in itertools.combinations(PRECEDENCE, n)]


@pytest.mark.parametrize("bad", _combinations(), ids=lambda c: "+".join(c))
def test_a_finished_run_takes_the_highest_ranked_bad_outcome(bad: tuple[StepStatus, ...]
                                                             ) -> None:
    """denied > failed > timed_out > cancelled, whatever else succeeded or was skipped."""
    expected = OUTCOMES[min(bad, key=PRECEDENCE.index)]
    steps = {f"s{i}": st(s) for i, s in enumerate(bad)}
    assert run_status(steps) is expected
    steps |= {"ok": st(S.SUCCEEDED), "skipped": st(S.SKIPPED)}
    assert run_status(steps) is expected
    assert run_status(dict(reversed(list(steps.items())))) is expected  # order-free


def test_a_finished_run_with_only_successes_and_skips_succeeded() -> None:
    assert run_status({"a": st(S.SUCCEEDED)}) is RunStatus.SUCCEEDED
    assert run_status({"a": st(S.SUCCEEDED), "b": st(S.SKIPPED)}) is RunStatus.SUCCEEDED


@pytest.mark.parametrize("final", [S.SUCCEEDED, *BLOCKING])
def test_a_run_with_a_step_in_progress_is_not_finished(final: StepStatus) -> None:
    for other in (S.PENDING, S.RUNNING):
        assert run_status({"a": st(final), "b": st(other)}) is RunStatus.RUNNING, other
    assert run_status({"a": st(final), "b": st(S.WAITING)}) is RunStatus.WAITING
    assert run_status({"a": st(final), "b": st(S.WAITING),
                       "c": st(S.PENDING)}) is RunStatus.WAITING
    assert run_status({"a": st(final), "b": st(S.WAITING),
                       "c": st(S.RUNNING)}) is RunStatus.RUNNING


def test_a_run_whose_steps_are_all_pending_is_running() -> None:
    """run_status never answers pending: the scheduler moves the run out of it first."""
    assert run_status({"a": st(S.PENDING), "b": st(S.PENDING)}) is RunStatus.RUNNING


# ------------------------------------------------------------------ sinks

def test_sinks_are_the_steps_nothing_depends_on(fan: WorkflowDef, chain: WorkflowDef,
                                                gated: WorkflowDef) -> None:
    assert sink_steps(fan) == ["join"]
    assert sink_steps(chain) == ["c"]
    assert sink_steps(gated) == ["side", "tell"]  # topological order


def test_every_step_of_a_graph_without_edges_is_a_sink() -> None:
    flat = parse_workflow("id: flat\nname: flat\nversion: 1.0.0\nsteps:\n"
                          "  one: {type: job, topic: t}\n  two: {type: job, topic: t}\n")
    assert sink_steps(flat) == ["one", "two"]
    assert drive(flat, states(flat))[0] == [Ready("one"), Ready("two")]
