"""Approvals, policy snapshots and API keys."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import Command, print_json, with_db
from engine.core import errors
from engine.core.settings import Settings
from engine.governance import approvals, decisions
from engine.governance.policy import Facts
from engine.runs import views
from engine.runs.services import Services


async def cmd_approvals_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await approvals.page(svc.db, tenant_id=args.tenant, status=args.status,
                                    limit=args.limit)
        if args.json:
            print_json([views.approval(a) for a in rows])
            return 0
        for a in rows:
            print(f"{a.approval_id}  {a.status.value:<10} run {a.run_id}  step {a.step_id}  "
                  f"requested by {a.requested_by}")
        if not rows:
            print("no approvals")
        return 0

    return await with_db(settings, body)


def decide_command(approve: bool) -> Command:
    async def command(args: argparse.Namespace, settings: Settings) -> int:
        async def body(svc: Services) -> int:
            row = await approvals.decide(svc.db, tenant_id=args.tenant,
                                         approval_id=args.approval_id, approve=approve,
                                         principal=args.principal, reason=args.reason,
                                         job_hash=args.job_hash)
            if args.json:
                print_json(views.approval(row))
            else:
                print(f"approval {row.approval_id} {row.status.value} by {row.decided_by}")
            return 0

        return await with_db(settings, body, acting=args)

    return command


async def cmd_policy_apply(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise errors.InvalidInput("FILE", f"cannot read {path}: {exc.strerror}") from exc

    async def body(svc: Services) -> int:
        stored = await decisions.store_bundle(
            svc.db, tenant_id=args.tenant, source=source,
            media_type="application/json" if path.suffix == ".json" else None,
            created_by=args.principal)
        activated = None
        if args.activate:
            activated = await decisions.activate(svc.db, tenant_id=args.tenant,
                                                  snapshot_hash=stored.row.snapshot_hash,
                                                  activated_by=args.principal)
        if args.json:
            print_json({"snapshot_hash": stored.row.snapshot_hash, "created": stored.created,
                         "activated": activated is not None})
        else:
            note = "" if stored.created else " (already stored)"
            print(f"{stored.row.snapshot_hash}{note}"
                  + (f"\nactive for tenant {args.tenant}" if activated else ""))
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_policy_activate(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        row = await decisions.activate(svc.db, tenant_id=args.tenant,
                                        snapshot_hash=args.snapshot_hash,
                                        activated_by=args.principal)
        print(f"{row.snapshot_hash} active for tenant {row.tenant_id} "
              f"(previous: {row.previous_hash or 'none'})")
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        active = await decisions.active_pointer(svc.db, args.tenant)
        snapshots = await decisions.snapshots(svc.db, args.tenant)
        if args.json:
            print_json({"tenant_id": args.tenant, "active": active,
                         "default_decision_without_policy": settings.policy_default,
                         "snapshots": [{"snapshot_hash": s.snapshot_hash, "bundle": s.bundle,
                                        "created_by": s.created_by,
                                        "created_at": s.created_at.isoformat()}
                                       for s in snapshots]})
            return 0
        print(f"tenant {args.tenant}: active snapshot "
              f"{active or f'none (default decision: {settings.policy_default})'}")
        for snap in snapshots:
            marker = "*" if snap.snapshot_hash == active else " "
            rules = len(snap.bundle.get("rules", []))
            print(f" {marker} {snap.snapshot_hash}  {rules} rule(s)  by {snap.created_by}")
        return 0

    return await with_db(settings, body)


async def cmd_policy_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    labels = dict(item.split("=", 1) for item in args.label)

    async def body(svc: Services) -> int:
        facts = Facts(tenant_id=args.tenant, workflow_id=args.workflow or "", step_id=args.step
                      or "", topic=args.topic, risk_tags=tuple(args.risk_tag),
                      capability=args.capability, labels=labels, input=args.input)
        async with svc.db.connection() as conn:
            evaluated = await svc.policies.evaluate(conn, args.tenant, facts)
        print_json(evaluated.to_doc())
        return 0

    return await with_db(settings, body)


def label_arg(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"--label takes key=value, got {value!r}")
    return value


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from engine.governance import apikeys

    async def body(svc: Services) -> int:
        row, plaintext = await apikeys.create(
            svc.db, apikeys.server_secret(settings), name=args.name,
            roles=[apikeys.Role(r) for r in args.role],
            tenants=[*([args.tenant] if args.tenant else []), *(args.tenant_grant or [])]
            or ["default"],
            created_by=args.principal)
        if args.json:
            print_json({"key_id": row.key_id, "name": row.name, "roles": row.roles,
                         "tenants": row.tenants, "key": plaintext})
        else:
            print(plaintext)
            print(f"key {row.key_id} ({row.name}): roles {', '.join(row.roles)}; tenants "
                  f"{', '.join(row.tenants)}. Shown once: only a hash is stored.",
                  file=sys.stderr)
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine.governance import apikeys

    async def body(svc: Services) -> int:
        rows = await apikeys.list_keys(svc.db)
        if args.json:
            print_json([{"key_id": k.key_id, "name": k.name, "roles": k.roles,
                          "tenants": k.tenants, "created_at": k.created_at.isoformat(),
                          "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                          "last_used_at": k.last_used_at.isoformat() if k.last_used_at
                          else None} for k in rows])
            return 0
        for k in rows:
            state = "revoked" if k.revoked_at else "active"
            print(f"{k.key_id}  {k.name:<20} {state:<8} {','.join(k.roles)}  "
                  f"tenants={','.join(k.tenants)}")
        return 0

    return await with_db(settings, body)


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from engine.governance import apikeys

    async def body(svc: Services) -> int:
        row = await apikeys.revoke(svc.db, args.key_id)
        print(f"key {row.key_id} ({row.name}) revoked")
        return 0

    return await with_db(settings, body)
