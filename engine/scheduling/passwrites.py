"""What a scheduler pass defers, and writes set-based at its end.

A pass used to spend ~11 round trips on each run it dispatched one job for, and ~7 on
each run it then finished, one statement per change. The common changes are now
collected while the pass walks its runs and written at its end with one statement per
kind: dispatched claimable attempts (their policy decision, the step's attempt count,
the job row), every run's status change with its scheduler flag cleared (one update per
run), and every run's timeline events. The pass holds its runs' locks from its first
statement to its commit, so nothing else moves those rows meanwhile, and every deferred
update is still guarded by the state the pass saw: a row count short of what was
deferred is an InvalidTransition, which rolls the whole pass back.

Rarer changes (approvals, denials, skips, notifications, drift re-evaluation) are still
written when they happen: they touch rows no deferred write touches in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from engine.core.enums import RunStatus
from engine.core.errors import InvalidTransition
from engine.core.states import RUN_TRANSITIONS
from engine.governance.decisions import DecisionBatch
from engine.process import tracing
from engine.store import Conn
from engine.store import approvals as approvals_q
from engine.store import items as items_q
from engine.store import jobs as jobs_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.items import ItemStart
from engine.store.jobs import NewJob
from engine.store.records import ApprovalRow, RunKey, RunRow
from engine.store.runs import RunChange
from engine.store.steps import AttemptStart


@dataclass
class PassWrites:
    attempts: list[AttemptStart] = field(default_factory=list)
    jobs: list[NewJob] = field(default_factory=list)
    # written before the events, so each policy.decision event has its decision_id
    decisions: DecisionBatch = field(default_factory=DecisionBatch)
    events: dict[RunKey, list[timeline_q.Event]] = field(default_factory=dict)
    scheduled: list[RunKey] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    # what the pass's spans need after its commit; stays empty while traces are off
    # (engine.process.tracing)
    dispatched: list[tracing.Dispatched] = field(default_factory=list)
    ended: list[RunRow] = field(default_factory=list)
    approvals: list[ApprovalRow] = field(default_factory=list)
    # for_each item attempts (engine.scheduling.fanout), and the parents of child runs
    # that ended (woken after the pass's own flags are cleared)
    item_starts: list[ItemStart] = field(default_factory=list)
    wake_parents: set[RunKey] = field(default_factory=set)
    # each moved run as the pass leaves it (what a start that dispatched answers)
    moved: dict[RunKey, RunRow] = field(default_factory=dict)
    # the dispatch plans the pass wrote (engine.scheduling.plans), remembered after commit
    planned: set[tuple[str, str, str, str]] = field(default_factory=set)
    _runs: dict[RunKey, RunChange] = field(default_factory=dict)
    _now: datetime | None = None

    async def now(self, conn: Conn) -> datetime:
        """The transaction's now(): the time every deferred statement will stamp."""
        if self._now is None:
            self._now = await runs_q.transaction_now(conn)
        return self._now

    @property
    def stamped(self) -> datetime | None:
        """The transaction's now(), once the pass has read it."""
        return self._now

    def move_run(self, run: RunRow, to: RunStatus, now: datetime, *, output: Any = None,
                 error: Any = None) -> RunRow:
        """Checks the transition and defers it; several moves of one run in a pass become
        one update from the status the pass first saw. ``now`` is the pass's `now`: the
        returned row carries the times the update will stamp."""
        if to not in RUN_TRANSITIONS.get(run.status, frozenset()):
            raise InvalidTransition(f"run {run.run_id} cannot move from {run.status} to {to}")
        key = (run.tenant_id, run.run_id)
        seen = self._runs[key].from_status if key in self._runs else run.status
        self._runs[key] = RunChange(run.tenant_id, run.run_id, seen, to, output, error)
        self.moved[key] = replace(run, status=to, started_at=run.started_at or now,
                                  finished_at=now if to.is_final else None)
        return self.moved[key]

    async def flush(self, conn: Conn) -> None:
        await self.decisions.write(conn)
        started = await steps_q.start_attempts(conn, self.attempts)
        if started != len(self.attempts):
            raise InvalidTransition(f"{len(self.attempts) - started} dispatched steps changed "
                                    "under the scheduler's run lock")
        started = await items_q.start_attempts(conn, self.item_starts)
        if started != len(self.item_starts):
            raise InvalidTransition(f"{len(self.item_starts) - started} dispatched items "
                                    "changed under the scheduler's run lock")
        await jobs_q.insert_many(conn, self.jobs)
        ended = await runs_q.end_pass(conn, self.scheduled, self._runs)
        if ended != len(self.scheduled):
            raise InvalidTransition(f"{len(self.scheduled) - ended} runs changed under the "
                                    "scheduler's lock")
        for tenant_id, run_id in sorted(self.wake_parents):
            await runs_q.wake_parent(conn, tenant_id, run_id)
        await timeline_q.append_for_runs(conn, self.events)
        await jobs_q.announce(conn, self.topics)
        if self.ended:  # traces are on, and runs ended: their spans show approval waits
            self.approvals = await approvals_q.of_runs(
                conn, [(run.tenant_id, run.run_id) for run in self.ended])
