"""`warden audit`: verify the timeline's keyed chains, rotate the chain key."""

from __future__ import annotations

import argparse

from engine.cli.common import print_json, with_db
from engine.core.settings import Settings
from engine.runs import timeline
from engine.runs.services import Services


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        checked, broken = await timeline.check(svc.db, args.tenant, args.run_id)
        if args.json:
            print_json({"checked": checked, "broken": [
                {"tenant_id": p.tenant_id, "run_id": str(p.run_id), "seq": p.seq,
                 "problem": p.problem} for p in broken]})
        else:
            for p in broken:
                print(f"TAMPERED: run {p.run_id} ({p.tenant_id}) at seq {p.seq}: {p.problem}")
            print(f"{checked} run(s) checked, {len(broken)} with a broken chain")
        return 1 if broken else 0

    return await with_db(settings, body)


async def cmd_audit_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        key_id = await timeline.rotate_key(svc.db, args.principal)
        if args.json:
            print_json({"key_id": key_id})
        else:
            print(f"chain key {key_id} is active; events already written keep their key")
        return 0

    return await with_db(settings, body)
