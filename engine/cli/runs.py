"""Workflows, runs, timelines and audits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from engine.cli.common import print_json, with_db
from engine.cli.format import format_timeline
from engine.cli.progress import StatusLine, run_summary
from engine.core import errors
from engine.core.enums import ApprovalStatus, RunStatus
from engine.core.settings import Settings
from engine.definitions import workflows
from engine.runs import lifecycle, timeline, views
from engine.runs.services import Services


async def cmd_workflows_apply(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise errors.InvalidInput("FILE", f"cannot read {path}: {exc.strerror}") from exc
    media_type = "application/json" if path.suffix == ".json" else None

    async def body(svc: Services) -> int:
        stored = await workflows.store(svc.db, tenant_id=args.tenant, source=source,
                                       media_type=media_type, created_by=args.principal)
        if args.json:
            print_json({"workflow_id": stored.row.workflow_id, "version": stored.row.version,
                         "digest": stored.row.digest, "created": stored.created})
        else:
            note = "" if stored.created else " (already stored, unchanged)"
            print(f"{stored.row.workflow_id} {stored.row.version}{note}")
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_runs_start(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        started = await lifecycle.start(
            svc, tenant_id=args.tenant,
            workflow_id=args.workflow_id, input=args.input, created_by=args.principal,
            idempotency_key=args.idempotency_key, version=args.version)
        if args.json:
            print_json({**views.run(started.run), "replayed": started.replayed})
        else:
            print(started.run.run_id)
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_runs_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        detail = await lifecycle.detail(svc, None, args.run_id)
        if args.json:
            print_json(views.run_detail(detail))
            return 0
        run = detail.run
        print(f"run {run.run_id}  {run.workflow_id}@{run.workflow_version}  {run.status}")
        for step in detail.steps:
            attempts = f"  attempts={step.attempts}" if step.attempts else ""
            print(f"  {step.step_id:<24} {step.type.value:<9} {step.status.value}{attempts}")
        for approval in detail.approvals:
            if approval.status is ApprovalStatus.PENDING:
                print(f"  waiting for approval {approval.approval_id} ({approval.step_id})")
        return 0

    return await with_db(settings, body)


async def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await lifecycle.page(svc.db, args.tenant, status=args.status,
                               workflow_id=args.workflow, limit=args.limit)
        if args.json:
            print_json([views.run(r) for r in rows])
            return 0
        for r in rows:
            print(f"{r.run_id}  {r.status.value:<10} {r.workflow_id}@{r.workflow_version}  "
                  f"{r.created_at:%Y-%m-%d %H:%M:%S}  by {r.created_by}")
        return 0

    return await with_db(settings, body)


async def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from engine.runs import stopping

    async def body(svc: Services) -> int:
        row = await stopping.cancel(svc.db, tenant_id=None, run_id=args.run_id,
                                    by=args.principal, reason=args.reason)
        print(f"run {row.run_id} {row.status.value}")
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_runs_rerun(args: argparse.Namespace, settings: Settings) -> int:
    from engine.runs import reruns

    async def body(svc: Services) -> int:
        if args.dry_run:
            plan = await reruns.plan(svc, tenant_id=None, run_id=args.run_id,
                                     from_step=args.from_step)
            print_json({"dry_run": True, **plan.to_doc()})
            return 0
        plan, started = await reruns.rerun(svc, tenant_id=None, run_id=args.run_id,
                                           from_step=args.from_step, created_by=args.principal)
        if args.json:
            print_json({"run": views.run(started.run), "plan": plan.to_doc()})
        else:
            print(started.run.run_id)
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_workflows_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await workflows.list_latest(svc.db, args.tenant)
        if args.json:
            print_json([{"workflow_id": r.workflow_id, "version": r.version, "name": r.name}
                         for r in rows])
            return 0
        for r in rows:
            print(f"{r.workflow_id:<32} {r.version:<10} {r.name}")
        return 0

    return await with_db(settings, body)


async def cmd_workflows_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await workflows.versions(svc.db, args.tenant, args.workflow_id)
        if args.json:
            print_json([{"version": r.version, "digest": r.digest, "definition": r.definition,
                          "created_by": r.created_by, "created_at": r.created_at.isoformat()}
                         for r in rows])
            return 0
        for r in rows:
            print(f"{r.workflow_id} {r.version}  {r.digest[:12]}  by {r.created_by} "
                  f"at {r.created_at:%Y-%m-%d %H:%M}")
        print(rows[0].source.rstrip())
        return 0

    return await with_db(settings, body)


async def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        events = await timeline.all_events(svc.db, None, args.run_id)
        if args.json:
            print_json([views.event(e) for e in events])
            return 0
        for line in format_timeline(events):
            print(line)
        return 0

    return await with_db(settings, body)


async def cmd_runs_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Prints the run's timeline as it grows, until the run ends (exit 0 if it succeeded)."""
    from engine.store.listener import SCHEDULER_CHANNEL, Listener

    async def body(svc: Services) -> int:
        wake = asyncio.Event()
        listener = Listener(svc.db.url, SCHEDULER_CHANNEL, lambda _payload: wake.set())
        listening = asyncio.create_task(listener.run())
        # on a terminal, the steps' statuses stay in view below the timeline; elsewhere the
        # output is the timeline alone, as scripts read it
        status_line = StatusLine(terminal_only=True)
        after = 0
        try:
            while True:
                events = await timeline.page(svc.db, None, args.run_id, after=after, limit=500)
                for line in format_timeline(events):
                    status_line.say(line)
                if events:
                    after = events[-1].seq
                    continue
                if status_line.shown:
                    detail = await lifecycle.detail(svc, None, args.run_id)
                    run = detail.run
                    status_line.show(run_summary(run.status, detail.steps))
                else:
                    async with svc.db.connection() as conn:
                        run = await lifecycle.get_row(conn, None, args.run_id)
                if run.status.is_final:
                    status_line.close()
                    print(f"run {run.run_id} {run.status.value}")
                    return 0 if run.status is RunStatus.SUCCEEDED else 1
                wake.clear()
                # NOTIFY says something moved; the short timeout covers events that wake no
                # scheduler (a worker's claim or checkpoint)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=0.5)
        finally:
            listening.cancel()

    return await with_db(settings, body)
