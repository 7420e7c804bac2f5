"""Workflows, runs, timelines and audits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

from engine.cli.args import EXIT_CODES
from engine.cli.common import (
    confirm,
    print_json,
    print_list,
    short,
    stamp,
    with_db,
)
from engine.cli.format import format_timeline
from engine.cli.progress import StatusLine, run_summary
from engine.core import cursors, errors
from engine.core.canonical import DECODE_HOOKS
from engine.core.enums import ApprovalStatus, RunStatus
from engine.core.settings import Settings
from engine.definitions import workflows
from engine.runs import lifecycle, timeline, views
from engine.runs.services import Services
from engine.store.records import RunRow


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
    if args.batch is not None:
        return await _start_batch(args, settings)

    async def body(svc: Services) -> int:
        started = await lifecycle.start(
            svc, tenant_id=args.tenant,
            workflow_id=args.workflow_id, input=args.input, created_by=args.principal,
            idempotency_key=args.idempotency_key, version=args.version,
            priority=args.priority)
        detail = await lifecycle.detail(svc, started.run.tenant_id, started.run.run_id)
        if args.json:
            print_json(views.run_started(detail, replayed=started.replayed))
        else:
            print(started.run.run_id)
        if not started.replayed:
            return 0
        run = started.run
        print(f"replayed: idempotency key {args.idempotency_key!r} already started run "
              f"{run.run_id} ({run.status.value}); nothing new was started", file=sys.stderr)
        if run.status is RunStatus.DENIED and not detail.jobs and views.denied_by(run) == \
                "policy":
            # denied at submit (no job ever existed): the first call exited 5, so does this
            raise lifecycle.denial(run)
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_runs_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        run_id = await lifecycle.resolve_id(svc.db, args.tenant, args.run_id)
        doc = views.run_detail(await lifecycle.detail(svc, args.tenant, run_id))
        if args.json:
            print_json(doc)
            return 0
        print(f"run {doc['run_id']}  {doc['workflow_id']}@{doc['workflow_version']}  "
              f"{doc['status']}" + (f" by {doc['denied_by']}" if doc["denied_by"] else ""))
        print(f"  {doc['summary']}")
        for step in doc["steps"]:
            attempts = f"  attempts={step['attempts']}" if step["attempts"] else ""
            note = f"  {step['note']}" if step["note"] else ""
            print(f"  {step['step_id']:<24} {step['type']:<9} {step['state']:<15}"
                  f"{attempts}{note}")
            for line in _flow_lines(step):
                print(f"    {line}")
        if event := doc.get("started_by_event"):
            print(f"  started by event {event['event_id']} ({event['name']}"
                  + (f", key {event['key']}" if event["key"] is not None else "") + ")")
        if doc["parent_run_id"]:
            print(f"  child of run {doc['parent_run_id']} (step {doc['parent_step_id']}"
                  + (f", item {doc['parent_item_index']}"
                     if doc["parent_item_index"] is not None else "") + ")")
        for approval in doc["approvals"]:
            if approval["status"] == ApprovalStatus.PENDING.value:
                print(f"  waiting for approval {approval['approval_id']} "
                      f"({approval['step_id']}): warden approvals show "
                      f"{short(approval['approval_id'])}")
        return 0

    return await with_db(settings, body)


def _flow_lines(step: dict[str, Any]) -> Iterable[str]:
    """A for_each step's items (counts, then one line each) and a workflow step's
    children (docs/operating.md#for_each-items-and-child-runs)."""
    items = step.get("items")
    if items:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(items["by_status"].items()))
        yield f"items: {items['total']} ({counts})"
        for item in items["list"]:
            where = item["job_id"] or (f"child {item['child_run_id']}"
                                       if item["child_run_id"] else "not started")
            error = f"  {item['error']}" if item["error"] else ""
            yield (f"[{item['item_index']}] {item['status']:<10} attempts={item['attempts']}"
                   f"  {where}{error}")
    for child in step.get("children") or ():
        if child["item_index"] is None:
            yield (f"child run {child['run_id']}  {child['workflow_id']}@"
                   f"{child['workflow_version']}  {child['status']}  attempt {child['attempt']}")


def _run_rows(items: list[dict[str, Any]]) -> Iterable[str]:
    for r in items:
        status = r["status"] + (f"/{r['denied_by']}" if r["denied_by"] else "")
        yield (f"{short(r['run_id'])}  {status:<17} {r['workflow_id']}@{r['workflow_version']}"
               f"  {stamp(r['created_at'])}  by {r['created_by']}"
               f"  {r['summary']}")


async def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> int:
    filters = lifecycle.RunFilter(
        status=args.status, denied_by=args.denied_by, workflow_id=args.workflow,
        id_prefix=args.id_prefix, created_after=args.created_after,
        created_before=args.created_before, idempotency_key=args.idempotency_key,
        rerun_of=args.rerun_of, input_match=lifecycle.input_filter(args.match))
    filters.params()  # a malformed prefix is refused before connecting

    async def body(svc: Services) -> int:
        before = None
        if args.cursor:
            try:
                at, key = cursors.decode(args.cursor)
                before = (at, UUID(key))
            except ValueError:
                raise errors.InvalidInput("--cursor", "not a cursor this tool issued") from None
        rows = await lifecycle.page(svc.db, args.tenant, filters=filters, before=before,
                               limit=args.limit)
        print_list(args, views.run_page(rows, args.limit), _run_rows, empty="no runs")
        return 0

    return await with_db(settings, body)


async def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from engine.runs import stopping

    async def body(svc: Services) -> int:
        run_id = await lifecycle.resolve_id(svc.db, args.tenant, args.run_id)
        doc = views.run_detail(await lifecycle.detail(svc, args.tenant, run_id))
        if not args.yes:
            open_steps = [s for s in doc["steps"] if s["status"] in ("pending", "running",
                                                                     "waiting")]
            print(f"run {run_id} ({doc['workflow_id']}, {doc['status']}): {doc['summary']}",
                  file=sys.stderr)
            for step in open_steps:
                print(f"  would cancel {step['step_id']} ({step['state']})", file=sys.stderr)
            if not confirm(args, "Cancel this run?"):
                print("not cancelled", file=sys.stderr)
                return 1
        row = await stopping.cancel(svc.db, tenant_id=args.tenant, run_id=run_id,
                                    by=args.principal, reason=args.reason)
        if args.json:
            print_json(views.run(row))
        else:
            print(f"run {row.run_id} {row.status.value}")
        return 0

    return await with_db(settings, body, acting=args)


def _plan_lines(plan: dict[str, Any]) -> Iterable[str]:
    yield f"rerun of {plan['rerun_of']} from step {plan['from_step']}:"
    yield "  reuse:  " + (", ".join(r["step_id"] for r in plan["reused"]) or "nothing")
    yield "  run:    " + ", ".join(plan["to_run"])
    for step_id, decision in plan["decisions"].items():
        rule = decision.get("rule") or "default"
        yield f"  policy: {step_id}: {decision['decision']} ({rule})"
    if plan["approvals_needed"]:
        yield "  needs approval: " + ", ".join(plan["approvals_needed"])
    for step_id, note in plan.get("flow", {}).items():
        yield f"  flow:   {step_id}: {note}"


async def cmd_runs_rerun(args: argparse.Namespace, settings: Settings) -> int:
    from engine.runs import reruns

    async def body(svc: Services) -> int:
        run_id = await lifecycle.resolve_id(svc.db, args.tenant, args.run_id)
        plan = await reruns.plan(svc, tenant_id=args.tenant, run_id=run_id,
                                 from_step=args.from_step, by=args.principal)
        if args.dry_run:
            if args.json:
                print_json(views.rerun_plan(plan))
            else:
                for line in _plan_lines(views.rerun_plan(plan)):
                    print(line)
            return 0
        if not args.yes:
            for line in _plan_lines(views.rerun_plan(plan)):
                print(line, file=sys.stderr)
            if not confirm(args, "Start this rerun?"):
                print("no rerun started", file=sys.stderr)
                return 1
        plan, started = await reruns.rerun(svc, tenant_id=args.tenant, run_id=run_id,
                                           from_step=args.from_step, created_by=args.principal)
        if args.json:
            detail = await lifecycle.detail(svc, started.run.tenant_id, started.run.run_id)
            print_json(views.run_started(detail, replayed=False, plan=plan))
        else:
            print(started.run.run_id)
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_workflows_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await workflows.list_latest(svc.db, args.tenant)
        print_list(args, {"items": [views.workflow(r) for r in rows], "next_cursor": None},
                   lambda items: (f"{w['workflow_id']:<32} {w['version']:<10} {w['name']}"
                                  for w in items), empty="no workflows")
        return 0

    return await with_db(settings, body)


async def cmd_workflows_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await workflows.versions(svc.db, args.tenant, args.workflow_id)
        if args.json:  # as GET /workflows/{id}
            print_json({"workflow_id": args.workflow_id,
                        "versions": [views.workflow(r) for r in rows]})
            return 0
        for r in rows:
            print(f"{r.workflow_id} {r.version}  {r.digest[:12]}  by {r.created_by} "
                  f"at {r.created_at:%Y-%m-%d %H:%M}")
        print(rows[0].source.rstrip())
        return 0

    return await with_db(settings, body)


async def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        run_id = await lifecycle.resolve_id(svc.db, args.tenant, args.run_id)
        events = await timeline.all_events(svc.db, args.tenant, run_id)
        by_seq = {e.seq: e for e in events}
        print_list(args, views.event_page(events, None),
                   lambda items: format_timeline([by_seq[i["seq"]] for i in items]),
                   empty="no events")
        return 0

    return await with_db(settings, body)


async def cmd_runs_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Prints the run's timeline as it grows, until the run ends (exit 0 if it succeeded)."""
    from engine.store.listener import SCHEDULER_CHANNEL, Listener

    async def body(svc: Services) -> int:
        run_id = await lifecycle.resolve_id(svc.db, args.tenant, args.run_id)
        wake = asyncio.Event()
        listener = Listener(svc.db.url, SCHEDULER_CHANNEL, lambda _payload: wake.set())
        listening = asyncio.create_task(listener.run())
        # on a terminal, the steps' statuses stay in view below the timeline; elsewhere the
        # output is the timeline alone, as scripts read it
        # with --json, stdout is one JSON document per event per line (JSON lines); the
        # steps' status line then goes to stderr, and only on a terminal
        status_line = StatusLine(sys.stderr if args.json else None, terminal_only=True)
        after = 0
        ended: RunRow | None = None
        try:
            while True:
                events = await timeline.page(svc.db, args.tenant, run_id, after=after,
                                             limit=500)
                if args.json:
                    for e in events:
                        print(json.dumps(views.event(e), default=str), flush=True)
                for line in [] if args.json else format_timeline(events):
                    status_line.say(line)
                if events:
                    after = events[-1].seq
                    continue
                if ended is not None:
                    status_line.close()
                    if not args.json:
                        print(f"run {ended.run_id} {ended.status.value}")
                    return 0 if ended.status is RunStatus.SUCCEEDED else 1
                if status_line.shown:
                    detail = await lifecycle.detail(svc, args.tenant, run_id)
                    run = detail.run
                    status_line.show(run_summary(run.status, detail.steps, detail.items))
                else:
                    async with svc.db.connection() as conn:
                        run = await lifecycle.get_row(conn, args.tenant, run_id)
                if run.status.is_final:
                    # read the timeline once more: the events committed with the ending
                    # may have landed after the read above
                    ended = run
                    continue
                wake.clear()
                # NOTIFY says something moved; the short timeout covers events that wake no
                # scheduler (a worker's claim or checkpoint)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=0.5)
        finally:
            listening.cancel()

    return await with_db(settings, body)


BATCH_FIELDS = {"input", "idempotency_key", "version"}


def _batch_items(args: argparse.Namespace) -> list[tuple[int, lifecycle.StartItem]]:
    """The lines of --batch FILE as start items; a bad line is a usage error naming it
    (nothing is started)."""
    if args.input != {} or args.idempotency_key or args.version:
        raise errors.InvalidInput("--batch", "give each run's input, idempotency_key and "
                                  "version in FILE, not as options")
    try:
        text = sys.stdin.read() if args.batch == "-" else Path(args.batch).read_text()
    except OSError as exc:
        raise errors.InvalidInput("--batch", f"cannot read {args.batch}: {exc.strerror}") \
            from exc
    items: list[tuple[int, lifecycle.StartItem]] = []  # (line number, item)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{args.batch}:{n}"
        try:
            doc = json.loads(line, **DECODE_HOOKS)
        except json.JSONDecodeError as exc:
            raise errors.InvalidInput(where, f"not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or set(doc) - BATCH_FIELDS:
            raise errors.InvalidInput(where, "each line is an object with input, "
                                      "idempotency_key and version (all optional)")
        key, version = doc.get("idempotency_key"), doc.get("version")
        if not isinstance(key, str | None) or not isinstance(version, str | None):
            raise errors.InvalidInput(where, "idempotency_key and version are strings")
        items.append((n, lifecycle.StartItem(doc.get("input", {}), key, version)))
    if not items:
        raise errors.InvalidInput("--batch", f"{args.batch} holds no run to start")
    return items


async def _start_batch(args: argparse.Namespace, settings: Settings) -> int:
    items = _batch_items(args)

    async def body(svc: Services) -> int:
        worst = 0
        for first in range(0, len(items), lifecycle.MAX_BATCH):
            chunk = items[first:first + lifecycle.MAX_BATCH]
            results = await lifecycle.start_many(
                svc, tenant_id=args.tenant, workflow_id=args.workflow_id,
                created_by=args.principal, items=[item for _, item in chunk],
                item_fields=False)
            for result in results:
                line = chunk[result.index][0]
                if result.error is not None:
                    worst = max(worst, next(
                        (code for cls, code in EXIT_CODES if isinstance(result.error, cls)), 1))
                doc = _batch_line(line, result)
                if args.json:
                    print(json.dumps(doc), flush=True)
                elif result.error is None and result.started is not None:
                    print(result.started.run.run_id)
                else:
                    print(f"line {line}: {result.error}", file=sys.stderr)
                    if result.started is not None:  # denied: the run exists
                        print(result.started.run.run_id)
        return worst

    return await with_db(settings, body, acting=args)


def _batch_line(line: int, result: lifecycle.ItemResult) -> dict[str, object]:
    doc: dict[str, object] = {"line": line}
    if result.started is not None:
        doc["run_id"] = str(result.started.run.run_id)
        doc["status"] = result.started.run.status.value
        doc["replayed"] = result.started.replayed
    if result.error is not None:
        doc["error"] = {"type": type(result.error).__name__, "message": str(result.error)}
    return doc
