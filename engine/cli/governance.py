"""Approvals, policy snapshots and API keys."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import UUID

from engine.cli.args import Command
from engine.cli.common import print_json, print_list, short, stamp, with_db
from engine.core import cursors, errors
from engine.core.settings import Settings
from engine.governance import approvals, decisions
from engine.governance.policy import Facts
from engine.runs import job_reads, lifecycle, views
from engine.runs.services import Services
from engine.store.records import WorkerGrantRow


def _approval_rows(items: list[dict[str, Any]]) -> Iterable[str]:
    for a in items:
        decided = (f"  {a['status']} by {a['decided_by']}: {a['reason']}"
                   if a["decided_by"] else "")
        yield (f"{short(a['approval_id'])}  {a['status']:<10} {a['kind']:<6} "
               f"run {short(a['run_id'])}  step {a['step_id']:<20} requested by "
               f"{a['requested_by']} at {stamp(a['requested_at'])}, expires "
               f"{stamp(a['expires_at'])}  job_hash {(a['job_hash'] or '-')[:12]}{decided}")
        if a.get("summary"):
            yield f"          lets run: {a['summary']}"


async def cmd_approvals_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        after = None
        if args.cursor:
            try:
                at, key = cursors.decode(args.cursor)
                after = (at, UUID(key))
            except ValueError:
                raise errors.InvalidInput("--cursor", "not a cursor this tool issued") from None
        rows, context = await approvals.queue(svc.db, svc.definitions, tenant_id=args.tenant,
                                              status=args.status, after=after, limit=args.limit)
        print_list(args, views.approval_page(rows, args.limit, context), _approval_rows,
                   empty="no approvals")
        return 0

    return await with_db(settings, body)


def _show_lines(doc: dict[str, Any]) -> Iterable[str]:
    plan = doc["lets_run"]
    run = plan["run"]
    yield (f"approval {doc['approval_id']}  {doc['status']}  ({doc['kind']} approval of step "
           f"{doc['step_id']})")
    yield (f"  run        {run['run_id']}  {run['workflow_id']}@{run['workflow_version']}  "
           f"{run['status']}, started by {run['created_by']}")
    yield f"  requested  by {doc['requested_by']} at {stamp(doc['requested_at'])}"
    yield f"  expires    {stamp(doc['expires_at'])}"
    asked = plan["asked_by"]
    if asked["kind"] == "policy" and asked.get("decision"):
        d = asked["decision"]
        yield f"  asked by   policy rule {d['rule'] or '(default)'}: {d['reason']}"
    elif asked["kind"] == "step":
        yield f"  asked by   the workflow's approval step {asked['step_id']}"
    covers = plan["covers"]
    yield "  it lets run (what job_hash covers):"
    yield f"    topic        {covers['topic'] or '-'}"
    yield f"    input        {json.dumps(covers['input'], sort_keys=True)}"
    yield f"    upstream     {json.dumps(covers['upstream'], sort_keys=True)}"
    yield f"    constraints  {json.dumps(covers['constraints'], sort_keys=True)}"
    match = "matches" if plan["job_hash_matches"] else "DOES NOT MATCH the values above"
    yield f"  job hash   {doc['job_hash']} ({match})"
    active = plan["active_snapshot_hash"]
    same = "the active one" if active == doc["policy_snapshot_hash"] else f"active: {active}"
    yield f"  policy     snapshot {doc['policy_snapshot_hash']} ({same})"
    if plan["then"]:
        yield "  then:"
        for step in plan["then"]:
            topic = f" {step['topic']}" if step["topic"] else ""
            yield f"    {step['step_id']:<20} {step['type']}{topic}  ({step['status']})"
    if doc["decided_by"]:
        yield f"  decided    {doc['status']} by {doc['decided_by']} at " \
              f"{stamp(doc['decided_at'])}: {doc['reason']}"


async def cmd_approvals_show(args: argparse.Namespace, settings: Settings) -> int:
    from engine.runs import approval_plan

    async def body(svc: Services) -> int:
        approval_id = await approvals.resolve_id(svc.db, args.tenant, args.approval_id)
        row = await approvals.show(svc.db, args.tenant, approval_id)
        job = (await job_reads.get(svc.db, row.tenant_id, row.job_id)
               if row.job_id is not None else None)
        doc = views.approval_detail(row, job, await approval_plan.plan(svc, row.tenant_id,
                                                                       approval_id))
        if args.json:
            print_json(doc)
        else:
            for line in _show_lines(doc):
                print(line)
        return 0

    return await with_db(settings, body)


def decide_command(approve: bool) -> Command:
    async def command(args: argparse.Namespace, settings: Settings) -> int:
        async def body(svc: Services) -> int:
            approval_id = await approvals.resolve_id(svc.db, args.tenant, args.approval_id)
            row = await approvals.decide(svc.db, tenant_id=args.tenant,
                                         approval_id=approval_id, approve=approve,
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
                      capability=args.capability, labels=labels,
                      input=lifecycle.check_input(args.input))
        async with svc.db.connection() as conn:
            evaluated = await svc.policies.evaluate(conn, args.tenant, facts)
        print_json(evaluated.to_doc())
        return 0

    return await with_db(settings, body)


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


async def cmd_workers_grant(args: argparse.Namespace, settings: Settings) -> int:
    from engine.governance import worker_grants

    async def body(svc: Services) -> int:
        row = await worker_grants.grant(svc.db, role=args.role, tenant_id=args.grant_tenant,
                                        topic_glob=args.topic, granted_by=args.principal)
        if args.json:
            print_json(_grant_doc(row))
        else:
            print(f"{row.role_name} may work on tenant {row.tenant_id}, topics {row.topic_glob}")
        return 0

    return await with_db(settings, body, acting=args)


async def cmd_workers_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from engine.governance import worker_grants

    async def body(svc: Services) -> int:
        row = await worker_grants.revoke(svc.db, role=args.role, tenant_id=args.grant_tenant,
                                         topic_glob=args.topic)
        if args.json:
            print_json(_grant_doc(row))
        else:
            print(f"{row.role_name} may no longer work on tenant {row.tenant_id}, "
                  f"topics {row.topic_glob}")
        return 0

    return await with_db(settings, body)


async def cmd_workers_grants(args: argparse.Namespace, settings: Settings) -> int:
    from engine.governance import worker_grants

    async def body(svc: Services) -> int:
        rows = await worker_grants.grants(svc.db, args.role)
        if args.json:
            print_json([_grant_doc(r) for r in rows])
            return 0
        for r in rows:
            print(f"{r.role_name:<24} tenant={r.tenant_id:<16} topics={r.topic_glob:<32} "
                  f"by {r.granted_by} at {r.granted_at.isoformat(timespec='seconds')}")
        return 0

    return await with_db(settings, body)


def _grant_doc(row: WorkerGrantRow) -> dict[str, Any]:
    return {"role": row.role_name, "tenant_id": row.tenant_id, "topic_glob": row.topic_glob,
            "granted_by": row.granted_by, "granted_at": row.granted_at.isoformat()}
