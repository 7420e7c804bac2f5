"""`warden schedules list|pause|resume` (docs/workflows.md#schedules)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from engine.cli.common import print_json, print_list, stamp, with_db
from engine.core.settings import Settings
from engine.runs import schedules
from engine.runs.services import Services


async def cmd_schedules_list(args: argparse.Namespace, settings: Settings) -> int:
    def table(items: list[dict[str, Any]]) -> Iterable[str]:
        for s in items:
            state = "PAUSED" if s["paused"] else "active" if s["active"] else "dropped"
            ticks = ", ".join(stamp(t) for t in s["next_ticks"]) or "-"
            yield (f"{s['workflow_id']}/{s['name']:<24} {state:<8} {s['cron']!r} "
                   f"{s['timezone']}  overlap {s['overlap']}  catch_up {s['catch_up']}  "
                   f"last {stamp(s['last_tick'])} {s.get('last_outcome') or ''}  "
                   f"next {ticks}")

    async def body(svc: Services) -> int:
        rows, now = await schedules.listing(svc.db, args.tenant, include_inactive=args.all)
        print_list(args, {"items": [schedules.schedule_doc(r, now) for r in rows],
                          "next_cursor": None}, table, empty="no schedules")
        return 0

    return await with_db(settings, body)


def pause_command(paused: bool) -> Any:
    async def command(args: argparse.Namespace, settings: Settings) -> int:
        async def body(svc: Services) -> int:
            row = await schedules.set_paused(svc.db, tenant_id=args.tenant,
                                             workflow_id=args.workflow_id, name=args.name,
                                             paused=paused, by=args.principal)
            rows, now = await schedules.listing(svc.db, args.tenant, include_inactive=True)
            found = next(r for r in rows if (r.workflow_id, r.name) == (row.workflow_id,
                                                                        row.name))
            doc = schedules.schedule_doc(found, now)
            if args.json:
                print_json(doc)
            else:
                ticks = ", ".join(stamp(t) for t in doc["next_ticks"]) or "none while paused"
                print(f"{row.workflow_id}/{row.name} {'paused' if paused else 'resumed'}; "
                      f"next ticks: {ticks}")
            return 0

        return await with_db(settings, body, acting=args)

    return command


cmd_schedules_pause = pause_command(True)
cmd_schedules_resume = pause_command(False)
