"""The scheduler: moves runs along their DAG.

Each pass locks a batch of runs flagged ``needs_scheduling`` (SKIP LOCKED, so any number
of `warden serve` processes share the work and none advances a run twice), reads all
their steps at once, re-evaluates jobs whose policy snapshot is no longer active, asks
`engine.definitions.dag` what to do, applies it through the dispatch gate
(`engine.scheduling.dispatch`) — jobs, approvals, notifications, skips, the run's own
status — and clears the flags. Every change and its timeline event commit together; the
common changes are written set-based at the end of the pass
(`engine.scheduling.passwrites`).

A run that cannot advance fails its whole pass (no savepoint per run: that cost two round
trips per run on every pass); the scheduler then takes that batch's runs one per
transaction, so the bad run holds up no other and stays flagged. It is then left out of
this scheduler's batches for a while, doubling each time it fails again, so a run that
keeps failing costs one lone transaction now and then instead of halving every batch.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from engine.core.enums import RunStatus, StepStatus, StepType
from engine.core.errors import Busy, DatabaseUnavailable, WardenError
from engine.definitions import dag
from engine.definitions.model import StepDef
from engine.governance.decisions import ActivePolicy
from engine.process import metrics, tracing
from engine.process.lookback import Lookback
from engine.runs.services import Services, StartDispatched
from engine.scheduling import children, flow
from engine.scheduling.dispatch import Dispatcher, RunPass, moved
from engine.scheduling.fanout import Fanout, Flow, load_flows
from engine.scheduling.floor import SchedulingFloor
from engine.scheduling.passwrites import PassWrites
from engine.scheduling.plans import DispatchPlans
from engine.store import Conn, savepoint
from engine.store import approvals as approvals_q
from engine.store import jobs as jobs_q
from engine.store import notifications as notifications_q
from engine.store import runs as runs_q
from engine.store import steps as steps_q
from engine.store import timeline as timeline_q
from engine.store.records import ApprovalRow, JobRow, RunKey, RunRow, StepRow

log = logging.getLogger(__name__)

# runs a worker's completion ended, observed per statement (runs_observe_ends); a full
# batch is followed at once by the next (engine/daemons/serve.py), so a poll drains what
# a busy second left
ENDS_PER_STATEMENT = 500


class _PassFailed(Exception):
    """A run of the pass could not advance; the pass was rolled back."""

    def __init__(self, keys: list[RunKey]) -> None:
        super().__init__(f"a pass over {len(keys)} runs failed")
        self.keys = keys


class Scheduler:
    def __init__(self, svc: Services, *, batch_size: int = 50,
                 retry_delays_s: tuple[float, float] = (0.5, 60.0)) -> None:
        self.svc = svc
        self.dispatcher = Dispatcher(svc)
        self.fanout = Fanout(svc)
        self.plans = DispatchPlans(svc.start_plan_misses)
        self.batch_size = batch_size
        # runs that failed alone: when this scheduler may take them again, and the delay
        # that set it (first, then doubled up to the cap)
        self._retry_delays_s = retry_delays_s
        self._held: dict[RunKey, tuple[float, float]] = {}
        self.floor = SchedulingFloor(svc.db)
        # the observer of ends: a few seconds of ends per pass, all of them once a minute
        self.ends_lookback = Lookback(loop="ends")

    async def run_once(self) -> int:
        """One pass over up to ``batch_size`` runs; returns how many were taken."""
        now = time.monotonic()
        # forget runs long past their hold: another scheduler may have moved them on
        cap = self._retry_delays_s[1]
        self._held = {k: v for k, v in self._held.items() if v[0] + cap > now}
        held = [key for key, (until, _) in self._held.items() if until > now]
        floor = await self.floor.for_pass()
        try:
            async with self.svc.db.transaction(generic_plans=True) as conn:
                runs = await runs_q.lock_for_scheduling(conn, self.batch_size, held,
                                                        floor=floor)
                writes = await self._pass(conn, runs)
        except _PassFailed as failed:
            await self._one_at_a_time(failed.keys)
            return len(failed.keys)
        self.plans.remember(writes.planned)
        _trace(writes, now)
        for run in runs:
            self._held.pop((run.tenant_id, run.run_id), None)
        return len(runs)

    async def observe_ends(self, limit: int = ENDS_PER_STATEMENT) -> int:
        """Observes up to ``limit`` runs a worker's completion ended (warden.complete_jobs
        puts them in warden.run_ends and flags nothing): their duration metric and span,
        once the statement that takes them off has committed. One autocommit statement, no
        pass: a one-step run's end costs no scheduler wake-up (docs/design.md#scale-path).
        Returns how many were taken."""
        async with self.svc.db.connection() as conn:
            with self.ends_lookback.look() as back:
                ended = await runs_q.observe_ends(conn, limit, back)
            # a run's span shows its approval waits (as a pass's, engine.scheduling.passwrites)
            waits: dict[RunKey, list[ApprovalRow]] = defaultdict(list)
            if ended and tracing.enabled():
                for approval in await approvals_q.of_runs(
                        conn, [(run.tenant_id, run.run_id) for run in ended]):
                    waits[(approval.tenant_id, approval.run_id)].append(approval)
        for run in ended:
            metrics.run_ended(run)
            tracing.run_ended(run, waits.get((run.tenant_id, run.run_id), ()))
        return len(ended)

    async def _one_at_a_time(self, keys: Sequence[RunKey]) -> None:
        for key in keys:
            began = time.monotonic()
            try:
                async with self.svc.db.transaction(generic_plans=True) as conn:
                    writes = await self._pass(
                        conn, await runs_q.lock_for_scheduling_ids(conn, [key]))
                self._held.pop(key, None)
                self.plans.remember(writes.planned)
                _trace(writes, began)
            except _PassFailed as failed:
                self._hold(key)
                cause = failed.__cause__
                if isinstance(cause, Busy):
                    log.debug("run %s: %s; later", key[1], cause)
                else:
                    log.error("run %s could not advance; it stays flagged", key[1],
                              exc_info=cause, extra={"run_id": str(key[1])})

    def _hold(self, key: RunKey) -> None:
        first, cap = self._retry_delays_s
        previous = self._held.get(key)
        delay = min(previous[1] * 2, cap) if previous else first
        self._held[key] = (time.monotonic() + delay, delay)

    async def dispatch_started(self, conn: Conn, runs: list[RunRow],
                               events: dict[RunKey, list[timeline_q.Event]], *,
                               steps: Sequence[StepRow], policy: ActivePolicy
                               ) -> StartDispatched | None:
        """A pass over runs the caller's transaction just created (engine.runs.lifecycle
        start_many: they are invisible to every other scheduler until it commits), so
        their first steps are claimable the moment the start commits. ``events``: the
        start's own events, appended first. In a savepoint: a run that cannot advance
        leaves everything as if no pass had run (the runs stay flagged). What the start
        already holds is not read again: the steps it inserted, the policy it judged
        under (one tenant); a new run has no job to re-judge."""
        began = time.monotonic()
        writes = PassWrites(events={key: list(evs) for key, evs in events.items()})
        try:
            async with savepoint(conn):
                await self._pass(conn, runs, writes, steps=steps,
                                 policies={runs[0].tenant_id: policy} if runs else {})
        except _PassFailed as failed:
            log.debug("dispatch at start failed; the scheduler takes the runs",
                      exc_info=failed.__cause__)
            return None

        def after_commit() -> None:
            self.plans.remember(writes.planned)
            _trace(writes, began)

        return StartDispatched(dict(writes.moved), after_commit)

    async def _pass(self, conn: Conn, runs: list[RunRow], writes: PassWrites | None = None,
                    *, steps: Sequence[StepRow] | None = None,
                    policies: dict[str, ActivePolicy] | None = None) -> PassWrites:
        """``steps`` given: the runs are new (dispatch_started), so their steps are those
        and they have no job to re-judge."""
        writes = writes or PassWrites()
        if not runs:
            return writes
        keys = [(run.tenant_id, run.run_id) for run in runs]
        policies = {} if policies is None else policies
        # a run a worker's completion ended (warden.complete_jobs) is only observed: there
        # is nothing of it to read or decide
        open_keys = [key for run, key in zip(runs, keys, strict=True)
                     if not run.status.is_final]
        try:
            of_run: dict[RunKey, list[StepRow]] = defaultdict(list)
            drifted: dict[RunKey, list[JobRow]] = defaultdict(list)
            flows: dict[RunKey, Flow] = {}
            if open_keys:
                for step in await steps_q.of_runs(conn, open_keys) if steps is None else steps:
                    of_run[(step.tenant_id, step.run_id)].append(step)
                # Busy (NOWAIT) when a claimer holds one: this pass fails, its runs go one
                # by one
                for job in (await jobs_q.drifted_of_runs(conn, open_keys)
                            if steps is None else ()):
                    drifted[(job.tenant_id, job.run_id)].append(job)
                flows = await load_flows(conn, of_run)
            for run, key in zip(runs, keys, strict=True):
                writes.scheduled.append(key)
                # a final run here (flagged again after it ended) has nothing to
                # advance, and its end was observed where it ended: by the pass that
                # ended it, or from warden.run_ends (observe_ends)
                if not run.status.is_final:
                    await self._advance(conn, run, of_run[key], drifted[key], writes, policies,
                                        flows.get(key) or Flow())
            await writes.flush(conn)
        except DatabaseUnavailable:
            raise
        except WardenError as exc:
            raise _PassFailed(keys) from exc
        return writes

    async def _advance(self, conn: Conn, run: RunRow, rows: list[StepRow],
                       drifted: list[JobRow], writes: PassWrites,
                       policies: dict[str, ActivePolicy], fan: Flow) -> None:
        workflow = await self.svc.definitions.get(conn, run.tenant_id, run.workflow_id,
                                                  run.workflow_version)
        state = RunPass(run, workflow, {s.step_id: s for s in rows}, writes, policies)
        # the steps a completion may dispatch itself from now on (engine.scheduling.plans)
        if self.plans.wanted():
            planned = await self.plans.ensure(conn, run.tenant_id, workflow,
                                              await state.policy(self.svc, conn))
            if planned is not None:
                writes.planned.add(planned)
        if run.status is RunStatus.PENDING:  # so run.started precedes the first step event
            state.run = writes.move_run(run, RunStatus.RUNNING, await writes.now(conn))
            await state.event(conn, "run.started")
        for job in drifted:  # dispatched under a snapshot that is no longer active
            if job.item_index is not None:
                await self.fanout.reevaluate(conn, state, job, fan.items[job.step_id])
            else:
                await self.dispatcher.reevaluate(conn, state, job)
        # for_each items and child runs that moved since the last pass
        await self.fanout.advance_run(conn, state, fan)
        await _advance_waits(conn, state)
        # every action moves one step forward for good, so this bound is never reached by
        # a healthy run; it only stops a bug from looping inside a held transaction
        for _ in range(3 * len(workflow.steps) + 1):
            action = dag.next_action(workflow, _states(state))
            if action is None:
                break
            state.steps[action.step_id] = await self._apply(conn, state, action)
        await self._settle(conn, state, dag.run_status(_states(state)))
        # extends: a start's pass (dispatch_started) comes with the start's events first
        writes.events.setdefault((run.tenant_id, run.run_id), []).extend(state.events)
        writes.topics |= state.topics

    async def _apply(self, conn: Conn, state: RunPass, action: dag.Action) -> StepRow:
        step = state.steps[action.step_id]
        definition = state.workflow.steps[action.step_id]
        if isinstance(action, dag.Skip):
            await state.event(conn, "step.skipped", step.step_id,
                              data={"because": action.because})
            return await moved(steps_q.transition(conn, step, StepStatus.SKIPPED))
        if isinstance(action, dag.Retry):
            return await self.dispatcher.dispatch_job(conn, state, definition, step,
                                                      action.available_at)
        if definition.when is not None:
            ended = await flow.condition(conn, state, definition, step)
            if ended is not None:
                return ended
        await state.event(conn, "step.ready", step.step_id)
        if definition.for_each is not None:
            return (await self.fanout.start(conn, state, definition, step))[0]
        if definition.type is StepType.WORKFLOW:
            return await children.start_for_step(self.svc, conn, state, definition, step)
        if definition.type in flow.TYPES:
            return await flow.begin(conn, state, definition, step)
        if definition.type is StepType.JOB:
            return await self.dispatcher.dispatch_job(conn, state, definition, step, None)
        if definition.type is StepType.APPROVAL:
            return await self.dispatcher.request_step_approval(conn, state, definition, step)
        return await self._notify(conn, state, definition, step)

    async def _notify(self, conn: Conn, state: RunPass, definition: StepDef,
                      step: StepRow) -> StepRow:
        payload = {"run_id": str(step.run_id), "workflow_id": state.run.workflow_id,
                   "step_id": step.step_id}
        note = await notifications_q.insert(
            conn, tenant_id=step.tenant_id, run_id=step.run_id, step_id=step.step_id,
            message=definition.message, webhook=definition.webhook, payload=payload)
        await state.event(conn, "notify.sent", step.step_id, data={
            "notification_id": str(note.notification_id), "webhook": note.webhook is not None})
        return await moved(steps_q.transition(
            conn, step, StepStatus.SUCCEEDED,
            output={"notification_id": str(note.notification_id)}))

    async def _settle(self, conn: Conn, state: RunPass, target: RunStatus) -> None:
        """Moves the run (already out of pending) to ``target``."""
        run = state.run
        if run.status is target:
            return
        output: Any = None
        error: Any = None
        if target.is_final:
            kind = f"run.{target.value}"
            output = {sid: state.steps[sid].output for sid in dag.sink_steps(state.workflow)
                      if state.steps[sid].status is StepStatus.SUCCEEDED}
            error = {sid: s.error for sid, s in state.steps.items()
                     if s.status in (StepStatus.FAILED, StepStatus.DENIED, StepStatus.TIMED_OUT)
                     and s.error is not None} or None
            if state.workflow.output is not None:  # the workflow's own `output:` mapping
                output, error = children.declared_output(state, error)
            if run.parent_run_id is not None:  # its parent's step takes the outcome
                state.writes.wake_parents.add((run.tenant_id, run.parent_run_id))
        else:
            kind = "run.waiting" if target is RunStatus.WAITING else "run.resumed"
        state.run = state.writes.move_run(run, target, await state.writes.now(conn),
                                          output=output, error=error)
        _observe_end(state.run, state.writes)
        await state.event(conn, kind, data={"status": target.value})


def with_start_dispatch(svc: Services) -> Services:
    """``svc`` whose starts dispatch their runs' first steps in the start's transaction
    (Services.start_dispatch), as `warden serve` and the CLI run them."""
    return replace(svc, start_dispatch=Scheduler(svc).dispatch_started)


def _trace(writes: PassWrites, began: float) -> None:
    """The spans of a committed pass (engine.process.tracing): its dispatches, from the
    pass's now() for as long as the pass took, and the runs it ended."""
    if writes.stamped is not None and writes.dispatched:
        end = writes.stamped + timedelta(seconds=time.monotonic() - began)
        tracing.dispatched(writes.dispatched, writes.stamped, end)
    for run in writes.ended:
        tracing.run_ended(run, [a for a in writes.approvals
                                if (a.tenant_id, a.run_id) == (run.tenant_id, run.run_id)])


def _observe_end(run: RunRow, writes: PassWrites) -> None:
    """The run's end, for the pass that ended it: its duration metric, and its span once
    the pass commits."""
    metrics.run_ended(run)
    if run.status.is_final and tracing.enabled():
        writes.ended.append(run)


async def _advance_waits(conn: Conn, state: RunPass) -> None:
    """Timers that came due, waits whose event came or whose timeout passed."""
    for step_id, step in list(state.steps.items()):
        definition = state.workflow.steps[step_id]
        if step.status is StepStatus.WAITING and definition.type in flow.TYPES:
            state.steps[step_id] = await flow.advance(conn, state, definition, step)


def _states(state: RunPass) -> dict[str, dag.StepState]:
    return {sid: dag.StepState(s.status, s.attempts, s.retry_at)
            for sid, s in state.steps.items()}
