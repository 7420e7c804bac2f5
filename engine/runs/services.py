"""The long-lived things every engine operation needs, built once per process."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.definitions.workflows import DefinitionCache
from engine.governance.decisions import ActivePolicy, Policies
from engine.governance.policy import Verdict
from engine.store import Conn, Database
from engine.store.records import RunKey, RunRow, StepRow
from engine.store.timeline import Event

DEFAULT_APPROVAL_EXPIRES_MS = 7 * 24 * 3600 * 1000
DEFAULT_EVENT_KEEP_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class StartDispatched:
    """What dispatching new runs inside their start transaction did: each run as it is
    now (moved out of pending), and what to do once that transaction has committed."""

    runs: Mapping[RunKey, RunRow]
    after_commit: Callable[[], None]


class StartDispatch(Protocol):
    """Runs a scheduler pass over runs created (and so locked) by the caller's
    transaction, appending ``events`` (the start's own, per run) before the pass's own;
    ``steps``: the runs' steps as inserted, ``policy``: the tenant's, as the start read it.
    None: the pass failed and wrote nothing; the runs stay flagged for the scheduler.

    The scheduler lives above this layer (engine.scheduling), so a composition root
    plugs it in (engine.scheduling.scheduler.with_start_dispatch)."""

    def __call__(self, conn: Conn, runs: list[RunRow], events: dict[RunKey, list[Event]], *,
                 steps: Sequence[StepRow], policy: ActivePolicy
                 ) -> Awaitable[StartDispatched | None]: ...


class StartPlanMisses:
    """Which (tenant, workflow, version asked) found no start plan lately, so that their
    starts go the long way at once for a while instead of asking warden.start_planned_run
    first every time (engine/runs/lifecycle.py). A plan this process writes clears its
    workflow's misses (engine/scheduling/plans.py); one another process wrote is found
    after at most ``TTL_S``."""

    TTL_S = 10.0
    MAX = 4096

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._until: dict[tuple[str, str, str | None], float] = {}

    def recent(self, tenant_id: str, workflow_id: str, version: str | None) -> bool:
        until = self._until.get((tenant_id, workflow_id, version))
        return until is not None and until > self.clock()

    def missed(self, tenant_id: str, workflow_id: str, version: str | None) -> None:
        if len(self._until) >= self.MAX:  # forgetting costs one more call each
            self._until.clear()
        self._until[(tenant_id, workflow_id, version)] = self.clock() + self.TTL_S

    def planned(self, tenant_id: str, workflow_id: str) -> None:
        for key in [k for k in self._until if k[:2] == (tenant_id, workflow_id)]:
            del self._until[key]


@dataclass(frozen=True)
class Services:
    db: Database
    definitions: DefinitionCache
    policies: Policies
    approval_expires_ms: int = DEFAULT_APPROVAL_EXPIRES_MS
    # WARDEN_EVENT_KEEP_MS (engine/runs/events.py)
    event_keep_ms: int = DEFAULT_EVENT_KEEP_MS
    # a start dispatches its runs' first steps in its own transaction (one hop from the
    # start to a worker, not two: start -> scheduler -> worker); None: the scheduler does
    start_dispatch: StartDispatch | None = None
    # shared by every copy of these services (dataclasses.replace keeps the object)
    start_plan_misses: StartPlanMisses = field(default_factory=StartPlanMisses)

    @classmethod
    def create(cls, db: Database, *, policy_default: Verdict = Verdict.DENY,
               approval_expires_ms: int = DEFAULT_APPROVAL_EXPIRES_MS,
               event_keep_ms: int = DEFAULT_EVENT_KEEP_MS) -> Services:
        return cls(db, DefinitionCache(), Policies(policy_default), approval_expires_ms,
                   event_keep_ms)
