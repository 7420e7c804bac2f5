"""The long-lived things every engine operation needs, built once per process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
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

    @classmethod
    def create(cls, db: Database, *, policy_default: Verdict = Verdict.DENY,
               approval_expires_ms: int = DEFAULT_APPROVAL_EXPIRES_MS,
               event_keep_ms: int = DEFAULT_EVENT_KEEP_MS) -> Services:
        return cls(db, DefinitionCache(), Policies(policy_default), approval_expires_ms,
                   event_keep_ms)
