"""The engine's background loops: scheduler, the observer of ends, reaper, reconciler,
notifier, claim floors, cron and event-started runs (the API runs beside them in
`warden serve`).

Stateless: run as many as you like against one database; SKIP LOCKED shares the work.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from engine.core.errors import Forbidden, InvalidInput
from engine.daemons.notifier import Notifier, NotifierConfig
from engine.daemons.reaper import Reaper
from engine.daemons.reconciler import Reconciler
from engine.process.loops import run_forever
from engine.runs import anchors, event_starts, schedules
from engine.runs.services import Services
from engine.scheduling.scheduler import ENDS_PER_STATEMENT, Scheduler
from engine.store import jobs as jobs_q
from engine.store import retention as retention_q
from engine.store.listener import (
    EVENT_STARTS_CHANNEL,
    NOTIFICATIONS_CHANNEL,
    SCHEDULER_CHANNEL,
    Listener,
)
from engine.store.scope import across_tenants

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    poll_interval_s: float = 1.0
    reap_interval_s: float = 1.0
    reconcile_interval_s: float = 10.0
    # the reconciler's sweeps of every open run (stuck runs, stalled steps): a safety net,
    # and under an old snapshot a walk that grows with the snapshot's age
    # (docs/design.md#sweeps)
    sweep_interval_s: float = 60.0
    # new notifications wake the notifier by NOTIFY; the poll finds retries coming due
    notify_interval_s: float = 1.0
    # runs a worker's completion ended are observed (duration metric, span) by a poll
    # this often: their ends wake nobody (warden.complete_jobs)
    ends_interval_s: float = 1.0
    dispatch_timeout: timedelta = timedelta(minutes=5)
    batch_size: int = 50
    notifier: NotifierConfig = field(default_factory=NotifierConfig)
    # anchors of the timeline's chain heads (engine/runs/anchors.py): off without a dir
    anchor_dir: Path | None = None
    anchor_key: bytes = b""
    anchor_interval_s: float = 300.0
    # partitions of the timeline kept ready ahead (docs/dba.md, "Partitions and retention")
    partition_months_ahead: int = 3
    partition_interval_s: float = 3600.0
    # cron schedules (docs/workflows.md#schedules): how often due ticks are looked for
    cron_interval_s: float = 5.0
    # event-started runs (docs/workflows.md#event-started-runs): woken by NOTIFY from
    # warden.send_event; the poll catches what a lost notification missed
    event_starts_interval_s: float = 5.0
    # claim floors raised to each lane's first pending job (docs/design.md#claim-floors):
    # a claim walks the entries of the jobs claimed since the last raise, so this bounds
    # that walk to a fifth of a second's claims
    claim_floors_interval_s: float = 0.2


async def start_event_runs(svc: Services) -> bool:
    """One pass of the event-starts loop; True when a full pass may have left more."""
    handled = await event_starts.run_pending(svc)
    for start in handled:
        log.info("event %s (%s) -> workflow %s: %s %s", start.event_id, start.tenant_id,
                 start.workflow_id, start.outcome, start.run_id or start.error or "")
    return len(handled) >= event_starts.STARTS_PER_PASS


async def observe_ends(scheduler: Scheduler) -> bool:
    """One pass of the observer of ends; True when a full pass may have left more."""
    return await scheduler.observe_ends() >= ENDS_PER_STATEMENT


async def raise_claim_floors(svc: Services) -> bool:
    """One pass of the claim-floors loop (docs/design.md#claim-floors); never more to do
    at once: a floor that lags only lengthens the claims' walk until the next pass."""
    async with svc.db.connection() as conn:
        await jobs_q.advance_claim_marks(conn)
    return False


async def run_engine(svc: Services, config: EngineConfig, stop: asyncio.Event) -> None:
    """Runs the loops until ``stop`` is set; each finishes its current pass."""
    # the loops move every tenant's runs (engine/store/scope.py); the tasks below inherit it
    across_tenants()
    scheduler = Scheduler(svc, batch_size=config.batch_size)
    reaper = Reaper(svc.db, timer_horizon_s=config.reap_interval_s)
    reconciler = Reconciler(svc, dispatch_timeout=config.dispatch_timeout,
                            sweep_interval=timedelta(seconds=config.sweep_interval_s),
                            pass_interval=timedelta(seconds=config.reconcile_interval_s))
    notifier = Notifier(svc.db, config.notifier)
    wake_scheduler = asyncio.Event()
    wake_notifier = asyncio.Event()
    wake_event_starts = asyncio.Event()
    never = asyncio.Event()  # the reaper has no NOTIFY: expiry is a matter of time only

    async def schedule_once() -> bool:
        return await scheduler.run_once() >= config.batch_size

    async def reap_once() -> bool:
        reaped = await reaper.run_once()
        # a full batch of either may have left more due: go again at once
        return max(reaped.jobs, reaped.waits) >= reaper.batch_size

    async def reconcile_once() -> bool:
        await reconciler.run_once(sweep=reconciler.sweep_due())
        return False

    async def notify_once() -> bool:
        return (await notifier.run_once()).attempts >= config.notifier.batch_size

    async def anchor_once() -> bool:
        assert config.anchor_dir is not None
        try:
            line, runs, broken = await anchors.anchor(svc.db, config.anchor_dir,
                                                      config.anchor_key)
        except (anchors.AnchorFileBroken, OSError) as exc:
            # the API and the other loops go on; `warden audit verify --anchors` says more
            log.error("no anchor written to %s: %s", config.anchor_dir, exc)
            return False
        for p in broken:
            # never anchored: an anchor vouches only for chains that verify
            log.error("not anchored: run %s (%s) has a broken chain at seq %d: %s", p.run_id,
                      p.tenant_id, p.seq, p.problem)
        if line is not None:
            log.info("anchored %d run head(s) at line %d of %s", runs, line,
                     config.anchor_dir / anchors.FILE_NAME)
        return False

    async def partitions_once() -> bool:
        try:
            async with svc.db.connection() as conn:
                created = await retention_q.ensure_partitions(conn,
                                                              config.partition_months_ahead)
        except (Forbidden, InvalidInput) as exc:
            log.error("partitions ahead not ensured: %s", exc)
            return False
        if created:
            log.info("created %d partition(s) for the months ahead", created)
        return False

    async def cron_once() -> bool:
        started = await schedules.run_due(svc)
        for tick in started:
            log.info("schedule %s/%s tick %s: %s %s", tick.workflow_id, tick.schedule,
                     tick.tick.isoformat(), tick.outcome, tick.run_id or "")
        return False

    listener = Listener(svc.db.url, SCHEDULER_CHANNEL, lambda _payload: wake_scheduler.set(),
                        also={NOTIFICATIONS_CHANNEL: lambda _payload: wake_notifier.set(),
                              EVENT_STARTS_CHANNEL: lambda _payload: wake_event_starts.set()})
    listen = asyncio.create_task(listener.run())
    loops = [run_forever("partitions", partitions_once, wake=never,
                         poll_interval_s=config.partition_interval_s, stop=stop)]
    if config.anchor_dir is not None:
        loops.append(run_forever("anchors", anchor_once, wake=never,
                                 poll_interval_s=config.anchor_interval_s, stop=stop))
    try:
        await asyncio.gather(
            *loops,
            run_forever("scheduler", schedule_once, wake=wake_scheduler,
                        poll_interval_s=config.poll_interval_s, stop=stop),
            # ends wake nobody (warden.complete_jobs): a poll takes them in batches
            run_forever("ends", partial(observe_ends, scheduler), wake=never,
                        poll_interval_s=config.ends_interval_s, stop=stop),
            run_forever("reaper", reap_once, wake=never,
                        poll_interval_s=config.reap_interval_s, stop=stop),
            run_forever("reconciler", reconcile_once, wake=never,
                        poll_interval_s=config.reconcile_interval_s, stop=stop),
            run_forever("notifier", notify_once, wake=wake_notifier,
                        poll_interval_s=config.notify_interval_s, stop=stop),
            run_forever("claim-floors", partial(raise_claim_floors, svc), wake=never,
                        poll_interval_s=config.claim_floors_interval_s, stop=stop),
            run_forever("cron", cron_once, wake=never,
                        poll_interval_s=config.cron_interval_s, stop=stop),
            run_forever("event-starts", partial(start_event_runs, svc), wake=wake_event_starts,
                        poll_interval_s=config.event_starts_interval_s, stop=stop),
        )
    finally:
        listen.cancel()
        notifier.close()
    log.info("engine stopped")
