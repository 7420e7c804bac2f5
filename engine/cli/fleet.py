"""Workers and queues: who polls which topic, and what waits for them."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from engine.cli.common import print_list, stamp, with_db
from engine.core.settings import Settings
from engine.runs import fleet, views
from engine.runs.services import Services


async def cmd_workers_list(args: argparse.Namespace, settings: Settings) -> int:
    def table(items: list[dict[str, Any]]) -> Iterable[str]:
        for w in items:
            yield (f"{w['name']:<28} {w['state']:<8} {w['host']}:{w['pid']}  "
                   f"{w['jobs_in_flight']}/{w['concurrency']} in flight  v{w['version']}  "
                   f"started {stamp(w['started_at'])}  last seen {stamp(w['last_seen_at'])}"
                   f"  topics {','.join(w['topics'])}")

    async def body(svc: Services) -> int:
        rows = await fleet.workers(svc.db, include_gone=args.all)
        print_list(args, {"items": [views.worker(w) for w in rows], "next_cursor": None},
                   table, empty="no live workers")
        return 0

    return await with_db(settings, body)


async def cmd_queues_list(args: argparse.Namespace, settings: Settings) -> int:
    def table(items: list[dict[str, Any]]) -> Iterable[str]:
        for q in items:
            age = "-" if q["oldest_age_s"] is None else f"{q['oldest_age_s']:.0f}s"
            who = (f"{q['live_workers']} live worker(s)" if q["live_workers"]
                   else "NO LIVE WORKER" if q["depth"] else "no live worker")
            yield (f"{q['topic']:<32} depth {q['depth']:<6} oldest {age:<8} running "
                   f"{q['running']:<5} claims/min {q['claimed_last_minute']:<6} {who}")

    async def body(svc: Services) -> int:
        rows = await fleet.queues(svc.db, args.tenant)
        print_list(args, {"items": [views.queue(q) for q in rows], "next_cursor": None},
                   table, empty="no queues: no pending work and no live worker")
        return 0

    return await with_db(settings, body)
