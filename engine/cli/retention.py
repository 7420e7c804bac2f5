"""`warden retention`: archive and drop the timeline partitions of old finished runs,
keeping the proof (engine/runs/retention.py, docs/dba.md "Partitions and retention")."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.audit import anchor_key_for
from engine.cli.common import os_user, print_json, with_db
from engine.core.errors import ConfigError, Forbidden
from engine.core.settings import Settings
from engine.runs import retention
from engine.runs.services import Services
from engine.store import retention as retention_q
from engine.store import session


async def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    archive_dir: Path | None = args.archive_dir or settings.retention_archive_dir
    anchor_dir: Path | None = args.anchors or settings.audit_anchor_dir
    if not args.dry_run and archive_dir is None:
        raise ConfigError("--archive-dir: no archive directory: pass --archive-dir or set "
                          "WARDEN_RETENTION_ARCHIVE_DIR")
    if not args.dry_run and anchor_dir is None:
        raise ConfigError("--anchors: retention records what it archived in the anchors: "
                          "pass --anchors DIR or set WARDEN_AUDIT_ANCHOR_DIR")
    key = anchor_key_for(settings)

    async def body(svc: Services) -> int:
        who = await session.identity(svc.db)
        if not who.may_act_for_others:
            raise Forbidden(f"warden retention runs as the schema owner (a login granted "
                            f"warden_owner); {who.db_role} may not detach or drop partitions")
        async with svc.db.connection() as conn:
            cutoff = await retention_q.now(conn) - args.older_than
        outcomes = await retention.retain(
            svc.db, cutoff=cutoff, archive_dir=archive_dir, anchor_dir=anchor_dir, key=key,
            by=f"{os_user()}@{who.db_role}", dry_run=args.dry_run)
        failed = [o for o in outcomes if o.action == "failed"]
        if args.json:
            print_json({"cutoff": cutoff.isoformat(), "dry_run": args.dry_run,
                        "partitions": [o.doc() for o in outcomes]})
        else:
            for o in outcomes:
                line = (f"{o.month}: {o.action.replace('_', ' ')}, {o.runs} run(s)")
                if o.reason:
                    line += f" ({o.reason})"
                if o.archive:
                    line += f"; archive {o.archive}, anchor line {o.anchor_line}"
                print(line)
            done = sum(o.action == "archived" for o in outcomes)
            print(f"cutoff {cutoff.isoformat()}: {len(outcomes)} partition(s), "
                  + (f"{sum(o.action == 'would_archive' for o in outcomes)} would be archived"
                     " (dry run: nothing changed)" if args.dry_run
                     else f"{done} archived and dropped, {len(failed)} failed"))
        return 1 if failed else 0

    return await with_db(settings, body)
