"""Long-running and set-up commands: migrate, serve, demo (the worker: engine/cli/worker.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta

from engine.cli.audit import anchor_key_for
from engine.cli.common import with_db
from engine.cli.serving import api_starter, http_base, process_started, wait_ready
from engine.core.settings import Settings
from engine.process.runtime import (
    configure_logging,
    database_url,
    settle_heap,
    stop_on_signals,
)
from engine.runs.services import Services


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.store.migrate import current_revision, upgrade

    with database_url(settings) as url:
        # a database that does not exist (or no server) is said in one line, exit 6, as
        # every other command says it, not as a page of SQLAlchemy traceback
        await asyncio.to_thread(current_revision, url)
        await asyncio.to_thread(upgrade, url)
        created = await ensure_partitions(url, settings.partition_months_ahead)
        print(f"schema at {await asyncio.to_thread(current_revision, url)}; {created} "
              f"partition(s) created for the {settings.partition_months_ahead} month(s) ahead")
    return 0


async def ensure_partitions(url: str, months_ahead: int) -> int:
    """The timeline's partitions of this month and the months ahead (docs/dba.md)."""
    from engine.store import Database
    from engine.store import retention as retention_q

    async with Database(url, max_size=1) as db, db.connection() as conn:
        return await retention_q.ensure_partitions(conn, months_ahead)


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from engine.daemons.notifier import NotifierConfig
    from engine.daemons.serve import EngineConfig, run_engine

    configure_logging(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    config = EngineConfig(poll_interval_s=settings.poll_interval_s,
                          dispatch_timeout=timedelta(milliseconds=settings.dispatch_timeout_ms),
                          notifier=NotifierConfig(
                              secret=settings.webhook_secret,
                              max_attempts=settings.webhook_max_attempts,
                              timeout_s=settings.webhook_timeout_ms / 1000),
                          anchor_dir=settings.audit_anchor_dir,
                          anchor_key=anchor_key_for(settings) if settings.audit_anchor_dir else b"",
                          anchor_interval_s=settings.audit_anchor_interval_s,
                          partition_months_ahead=settings.partition_months_ahead,
                          # a due tick is one indexed read: as often as the other loops
                          cron_interval_s=settings.poll_interval_s,
                          event_starts_interval_s=settings.poll_interval_s)

    async def body(svc: Services) -> int:
        start_api = api_starter(settings)  # before any loop starts: a taken port fails at once
        api = await start_api(svc, stop)
        base = http_base(settings)
        print(f"warden serve: API {base}/api/v1, operator page {base}/ui, scheduler, reaper, "
              f"reconciler and notifier (poll {settings.poll_interval_s}s)", file=sys.stderr,
              flush=True)
        settle_heap()
        await run_engine(svc, config, stop)
        await api
        return 0

    return await with_db(settings, body)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from engine.cli.demo import DemoOptions, run_demo

    options = DemoOptions(approve=args.approve, reset=args.reset,
                          exit_at_gate=args.exit_at_gate, began=process_started())
    if args.exit_at_gate:
        return await run_demo(settings, options, api=None)
    start_api = api_starter(settings, served_by="demo")  # a taken port fails now

    async def serve_and_wait(svc: Services, stop: asyncio.Event) -> asyncio.Task[None]:
        api = await start_api(svc, stop)
        await wait_ready(settings, api)
        return api

    return await run_demo(settings, options, api=serve_and_wait,
                          page_url=f"{http_base(settings)}/ui")
