"""The state machines of runs, steps, jobs and approvals, written once.

Every move a status may make is one `Move` below, naming who makes it: a SQL function of
the job protocol (``warden.…``, in sql/functions) or an engine module. Everything else
reads this table:

- the Python transition maps (``RUN_TRANSITIONS`` …) the store checks before each guarded
  UPDATE are derived from it;
- the test suite installs a trigger in every test database that refuses any status
  change not listed here, whoever makes it (tests/db/state_guard.py), so a SQL function
  cannot make a move the table does not allow without the suite failing;
- docs/states.md is rendered from it (``python -m engine.core.states``), and a test
  keeps the two equal.

A move from a status to itself is a re-stamp of an unclaimed job (dispatched again under
a new policy snapshot with the same outcome), not a change of state.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypeVar

from engine.core.enums import ApprovalStatus, JobStatus, RunStatus, StepStatus

Entity = Literal["run", "step", "job", "approval", "item"]
E = TypeVar("E", bound=StrEnum)

SCHEDULER = "engine.scheduling.scheduler"
DISPATCH = "engine.scheduling.dispatch"
SUBMIT = "engine.runs.lifecycle"
RERUNS = "engine.runs.reruns"
STOPPING = "engine.runs.stopping"
APPROVALS = "engine.governance.approvals"
REAPER = "engine.daemons.reaper"
RECONCILER = "engine.daemons.reconciler"
FLOW = "engine.scheduling.flow"
FANOUT = "engine.scheduling.fanout"
CHILDREN = "engine.scheduling.children"


@dataclass(frozen=True)
class Move:
    entity: Entity
    source: str
    target: str
    owners: tuple[str, ...]
    why: str


def _moves(entity: Entity, source: StrEnum, targets: tuple[StrEnum, ...],
           owners: tuple[str, ...], why: str) -> list[Move]:
    return [Move(entity, source.value, t.value, owners, why) for t in targets]


R, S, J, A = RunStatus, StepStatus, JobStatus, ApprovalStatus

MOVES: tuple[Move, ...] = tuple([
    # ---------------------------------------------------------------- runs
    *_moves("run", R.PENDING, (R.RUNNING,), (SCHEDULER,), "its first scheduler pass"),
    *_moves("run", R.PENDING, (R.WAITING, R.SUCCEEDED, R.FAILED), (SCHEDULER,),
            "its first pass started it and paused or ended it: one update (engine/"
            "scheduling/passwrites.py)"),
    *_moves("run", R.PENDING, (R.DENIED,), (SUBMIT, SCHEDULER),
            "a step denied at the submit gate; or at dispatch in its first pass"),
    *_moves("run", R.PENDING, (R.CANCELLED,), (STOPPING,), "cancelled by an operator"),
    *_moves("run", R.PENDING, (R.TIMED_OUT,), (SCHEDULER, STOPPING),
            "its deadline passed before its first scheduler pass"),
    *_moves("run", R.RUNNING, (R.WAITING,), (SCHEDULER,),
            "only approvals are open, nothing runs"),
    *_moves("run", R.WAITING, (R.RUNNING,), (SCHEDULER,), "an approval let work go on"),
    *_moves("run", R.RUNNING, (R.SUCCEEDED, R.FAILED, R.DENIED), (SCHEDULER,),
            "every step is final: the outcome of its steps"),
    *_moves("run", R.WAITING, (R.SUCCEEDED, R.FAILED, R.DENIED), (SCHEDULER,),
            "every step is final: the outcome of its steps"),
    *_moves("run", R.RUNNING, (R.TIMED_OUT,), (SCHEDULER, STOPPING),
            "a step or approval timed out; or the run's deadline passed"),
    *_moves("run", R.WAITING, (R.TIMED_OUT,), (SCHEDULER, STOPPING),
            "an approval expired; or the run's deadline passed"),
    *_moves("run", R.RUNNING, (R.CANCELLED,), (SCHEDULER, STOPPING),
            "cancelled by an operator"),
    *_moves("run", R.WAITING, (R.CANCELLED,), (SCHEDULER, STOPPING),
            "cancelled by an operator"),
    # ---------------------------------------------------------------- steps
    *_moves("step", S.PENDING, (S.RUNNING,), (DISPATCH,), "its first attempt is dispatched"),
    *_moves("step", S.PENDING, (S.WAITING,), (DISPATCH, FLOW),
            "an approval step, or a require_approval decision, asks a human; a sleep step "
            "sets its timer, a wait_event step begins to wait"),
    *_moves("step", S.PENDING, (S.SUCCEEDED,), (SCHEDULER, RERUNS),
            "a notify step wrote its notification; a rerun reuses the output"),
    *_moves("step", S.PENDING, (S.FAILED,), (DISPATCH, FLOW),
            "its input (or its condition, until or key) cannot be evaluated on the data "
            "(no retry can help)"),
    *_moves("step", S.PENDING, (S.DENIED,), (DISPATCH, SUBMIT),
            "policy denied it at dispatch, or at the submit gate"),
    *_moves("step", S.PENDING, (S.SKIPPED,), (SCHEDULER, FLOW, SUBMIT, STOPPING),
            "its trigger is not met (by default: a dependency did not succeed) or its "
            "when: condition is false; the run was denied or ran out of time first"),
    *_moves("step", S.PENDING, (S.CANCELLED,), (STOPPING,), "the run was cancelled"),
    *_moves("step", S.RUNNING, (S.WAITING,), (DISPATCH,),
            "a new policy snapshot requires an approval for its next attempt"),
    *_moves("step", S.RUNNING, (S.SUCCEEDED,), ("warden.complete_jobs",),
            "its job completed under a held lease"),
    *_moves("step", S.RUNNING, (S.FAILED,), ("warden.end_attempt", DISPATCH, RECONCILER),
            "its last attempt failed; a retry's input cannot be rendered; stuck for good"),
    *_moves("step", S.RUNNING, (S.DENIED,), (DISPATCH,),
            "policy denied its next attempt or re-evaluated its job as denied"),
    *_moves("step", S.RUNNING, (S.TIMED_OUT,), ("warden.end_attempt", STOPPING),
            "its last attempt's lease expired; the run's deadline passed"),
    *_moves("step", S.RUNNING, (S.CANCELLED,), (STOPPING,), "the run was cancelled"),
    *_moves("step", S.WAITING, (S.RUNNING,), (APPROVALS, DISPATCH),
            "its policy approval was approved, or a new snapshot no longer requires one"),
    *_moves("step", S.WAITING, (S.SUCCEEDED,), (APPROVALS, FLOW),
            "its approval step was approved; its timer fired; the event it waits for came"),
    *_moves("step", S.WAITING, (S.DENIED,), (APPROVALS, DISPATCH),
            "its approval was rejected, or a new snapshot denies its job"),
    *_moves("step", S.WAITING, (S.TIMED_OUT,), (REAPER, FLOW, STOPPING),
            "its approval expired; no event came within its timeout_ms; the run's "
            "deadline passed"),
    *_moves("step", S.WAITING, (S.CANCELLED,), (STOPPING,), "the run was cancelled"),
    # ---------------------------------------------------------------- jobs
    *_moves("job", J.PENDING, (J.RUNNING,), ("warden.claim_jobs",), "a worker claimed it"),
    *_moves("job", J.RUNNING, (J.SUCCEEDED,), ("warden.complete_jobs",),
            "its lease holder completed it"),
    *_moves("job", J.RUNNING, (J.FAILED,), ("warden.fail_job", "warden.release_job"),
            "its lease holder failed it, or gave it back when stopping"),
    *_moves("job", J.RUNNING, (J.TIMED_OUT,), ("warden.reap_expired_jobs", STOPPING),
            "its lease expired; the run's deadline passed"),
    *_moves("job", J.RUNNING, (J.CANCELLED,), ("warden.claim_jobs", STOPPING),
            "its run ended while the claim waited; the run was cancelled"),
    *_moves("job", J.PENDING, (J.PENDING, J.BLOCKED, J.DENIED), (DISPATCH,),
            "re-evaluated under a new policy snapshot before any claim"),
    *_moves("job", J.PENDING, (J.CANCELLED, J.TIMED_OUT), (STOPPING,),
            "the run was cancelled or ran out of time"),
    *_moves("job", J.BLOCKED, (J.BLOCKED,), (DISPATCH,),
            "re-evaluated under a new snapshot: still requires an approval"),
    *_moves("job", J.BLOCKED, (J.PENDING,), (APPROVALS, DISPATCH),
            "its approval was approved, or a new snapshot allows it"),
    *_moves("job", J.BLOCKED, (J.DENIED,), (APPROVALS, DISPATCH),
            "its approval was rejected, or a new snapshot denies it"),
    *_moves("job", J.BLOCKED, (J.TIMED_OUT,), (REAPER, STOPPING),
            "its approval expired; the run's deadline passed"),
    *_moves("job", J.BLOCKED, (J.CANCELLED,), (STOPPING,), "the run was cancelled"),
    # ---------------------------------------------------------------- approvals
    *_moves("approval", A.PENDING, (A.APPROVED, A.REJECTED), (APPROVALS,),
            "a principal who started no run of its rerun chain decided it"),
    *_moves("approval", A.PENDING, (A.EXPIRED,), (REAPER, STOPPING),
            "nobody decided before expires_at; the run ended first"),
    *_moves("approval", A.PENDING, (A.SUPERSEDED,), (DISPATCH,),
            "a new policy snapshot asked again (or no longer asks)"),
    # ------------------------------------- for_each and workflow steps (docs/workflows.md)
    *_moves("step", S.PENDING, (S.RUNNING,), (FANOUT, CHILDREN),
            "its for_each items were created; its child run was started"),
    *_moves("step", S.PENDING, (S.SUCCEEDED,), (FANOUT,), "its for_each list is empty"),
    *_moves("step", S.PENDING, (S.FAILED,), (FANOUT, CHILDREN),
            "its for_each value is not a list or has too many items; its child's input "
            "cannot be rendered"),
    *_moves("step", S.PENDING, (S.DENIED,), (FANOUT, CHILDREN),
            "its first item was denied at dispatch; its child was denied at its submit gate"),
    *_moves("step", S.RUNNING, (S.SUCCEEDED,), (FANOUT, CHILDREN),
            "every item succeeded; its child run succeeded"),
    *_moves("step", S.RUNNING, (S.FAILED, S.DENIED, S.TIMED_OUT, S.CANCELLED),
            (FANOUT, CHILDREN),
            "an item ended so after its retries; its child run ended so after its retries"),
    *_moves("job", J.PENDING, (J.CANCELLED,), (FANOUT,),
            "another item of its for_each step failed or was denied"),
    *_moves("job", J.RUNNING, (J.CANCELLED,), (FANOUT,),
            "another item of its for_each step failed or was denied"),
    *_moves("job", J.BLOCKED, (J.CANCELLED,), (FANOUT,),
            "another item of its for_each step failed or was denied"),
    # ---------------------------------------------------------------- for_each items
    *_moves("item", S.PENDING, (S.WAITING,), (FANOUT,),
            "policy requires an approval for its first attempt"),
    *_moves("item", S.RUNNING, (S.WAITING,), (FANOUT,),
            "policy requires an approval for its next attempt"),
    *_moves("item", S.WAITING, (S.RUNNING,), (APPROVALS, FANOUT),
            "its approval was approved, or a new snapshot no longer requires one"),
    *_moves("item", S.WAITING, (S.DENIED,), (APPROVALS, FANOUT),
            "its approval was rejected, or a new snapshot denies its job"),
    *_moves("item", S.WAITING, (S.TIMED_OUT,), (REAPER, STOPPING),
            "its approval expired; the run's deadline passed"),
    *_moves("item", S.WAITING, (S.CANCELLED,), (FANOUT, STOPPING),
            "another item failed or was denied; the run was cancelled"),
    *_moves("job", J.BLOCKED, (J.BLOCKED, J.PENDING, J.DENIED), (FANOUT,),
            "an item's job re-evaluated under a new snapshot"),
    *_moves("approval", A.PENDING, (A.EXPIRED, A.SUPERSEDED), (FANOUT,),
            "another item of its for_each step ended the step; a new snapshot asked again"),
    *_moves("item", S.PENDING, (S.RUNNING,), (FANOUT, CHILDREN),
            "its first attempt is dispatched, or its child run started"),
    *_moves("item", S.PENDING, (S.FAILED,), (FANOUT, CHILDREN),
            "its input cannot be rendered from the data"),
    *_moves("item", S.PENDING, (S.DENIED,), (FANOUT, CHILDREN),
            "policy denied it at dispatch (or asked an approval, which items cannot wait "
            "for); its child was denied at its submit gate"),
    *_moves("item", S.PENDING, (S.CANCELLED,), (FANOUT, STOPPING),
            "another item failed or was denied; the run was cancelled"),
    *_moves("item", S.PENDING, (S.SKIPPED,), (STOPPING,), "the run's deadline passed first"),
    *_moves("item", S.RUNNING, (S.SUCCEEDED,), ("warden.complete_jobs", CHILDREN),
            "its job completed under a held lease; its child run succeeded"),
    *_moves("item", S.RUNNING, (S.FAILED,), ("warden.end_attempt", FANOUT, CHILDREN),
            "its last attempt failed; a retry's input cannot be rendered; its child failed"),
    *_moves("item", S.RUNNING, (S.TIMED_OUT,), ("warden.end_attempt", STOPPING, CHILDREN),
            "its last attempt's lease expired; the run's deadline passed; its child timed "
            "out"),
    *_moves("item", S.RUNNING, (S.DENIED,), (FANOUT, CHILDREN),
            "policy denied its next attempt; its child was denied"),
    *_moves("item", S.RUNNING, (S.CANCELLED,), (FANOUT, STOPPING, CHILDREN),
            "another item failed or was denied; the run was cancelled; its child was "
            "cancelled"),
])


def transitions(entity: Entity) -> dict[str, frozenset[str]]:
    """Every allowed target of each status of ``entity``."""
    found: dict[str, set[str]] = defaultdict(set)
    for move in MOVES:
        if move.entity == entity:
            found[move.source].add(move.target)
    return {source: frozenset(targets) for source, targets in found.items()}


def _typed(entity: Entity, kind: type[E]) -> dict[E, frozenset[E]]:
    return {kind(s): frozenset(kind(t) for t in ts) for s, ts in transitions(entity).items()}


RUN_TRANSITIONS = _typed("run", RunStatus)
STEP_TRANSITIONS = _typed("step", StepStatus)
JOB_TRANSITIONS = _typed("job", JobStatus)
APPROVAL_TRANSITIONS = _typed("approval", ApprovalStatus)
ITEM_TRANSITIONS = _typed("item", StepStatus)


def render_markdown() -> str:
    """docs/states.md: one table per entity, who moves each state and why."""
    out = ["# State machines", "",
           "Generated from `engine/core/states.py` by `python -m engine.core.states > "
           "docs/states.md`; a test keeps the two equal. Every status change in the "
           "database is one of these moves (the test suite refuses any other, whoever "
           "makes it). An owner named `warden.…` is a SQL function in `sql/functions/`; "
           "the others are engine modules.", ""]
    for entity in ("run", "step", "job", "approval", "item"):
        out += [f"## {entity}", "", "| from | to | moved by | why |", "|---|---|---|---|"]
        for move in MOVES:
            if move.entity == entity:
                owners = ", ".join(f"`{o}`" for o in move.owners)
                out.append(f"| {move.source} | {move.target} | {owners} | {move.why} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
