"""`warden`: the command line. Every command reads the database from WARDEN_DATABASE_URL
(or the embedded server) and prints JSON with --json on read commands.

Exit codes scripts can rely on: 0 done, 1 error, 2 bad usage or input, 3 not found,
4 conflict (idempotency, already decided), 5 refused (policy, self-approval),
6 database unavailable or schema not migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from engine import approvals, errors, governance, runs, timeline, views, workflows
from engine.cli_format import format_timeline
from engine.enums import ApprovalStatus, RunStatus
from engine.policy import Facts, Verdict
from engine.runtime import configure_logging, database_url, stop_on_signals
from engine.services import Services
from engine.settings import Settings, load
from engine.store import Database

EXIT_CODES: tuple[tuple[type[errors.WardenError], int], ...] = (
    (errors.InvalidDefinition, 2), (errors.InvalidInput, 2), (errors.ConfigError, 2),
    (errors.NotFound, 3), (errors.Conflict, 4), (errors.InvalidTransition, 4),
    (errors.Forbidden, 5), (errors.PolicyDenied, 5),
    (errors.DatabaseUnavailable, 6), (errors.SchemaMismatch, 6),
)

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid id: {value!r}") from None


def _json_arg(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--input is not valid JSON: {exc}") from None


async def _with_db(settings: Settings, body: Callable[[Services], Awaitable[int]]) -> int:
    from engine.migrate import require_head

    with database_url(settings, announce=False) as url:
        await asyncio.to_thread(require_head, url)
        async with Database(url, max_size=4) as db:
            return await body(services_for(db, settings))


def services_for(db: Database, settings: Settings) -> Services:
    return Services.create(db, policy_default=Verdict(settings.policy_default),
                           approval_expires_ms=settings.approval_expires_ms)


# ---------------------------------------------------------------- commands

async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.migrate import current_revision, upgrade

    with database_url(settings) as url:
        await asyncio.to_thread(upgrade, url)
        print(f"schema at {await asyncio.to_thread(current_revision, url)}")
    return 0


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from engine.serve import EngineConfig, run_engine

    configure_logging(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    config = EngineConfig(poll_interval_s=settings.poll_interval_s,
                          dispatch_timeout=timedelta(milliseconds=settings.dispatch_timeout_ms))

    async def body(svc: Services) -> int:
        # the CLI is the composition root: the one engine module that may reach the API
        from api.server import serve_api
        from engine.apikeys import server_secret

        host, port = settings.http_addr
        api = asyncio.create_task(serve_api(svc, server_secret(settings), host, port, stop))
        print(f"warden serve: scheduler, reaper and API on http://{host}:{port}/api/v1 "
              f"(poll {settings.poll_interval_s}s)", file=sys.stderr, flush=True)
        await run_engine(svc, config, stop)
        await api
        return 0

    return await _with_db(settings, body)


def _load_handler(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise errors.InvalidInput("--handler", f"expected module:function, got {spec!r}")
    try:
        handler = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise errors.InvalidInput("--handler", f"cannot load {spec!r}: {exc}") from exc
    if not callable(handler):
        raise errors.InvalidInput("--handler", f"{spec!r} is not callable")
    return handler  # type: ignore[no-any-return]


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from engine.worker import Worker, WorkerConfig

    configure_logging(settings)
    if args.concurrency < 1:
        raise errors.InvalidInput("--concurrency", "must be at least 1")
    handler = _load_handler(args.handler)
    stop = asyncio.Event()
    stop_on_signals(stop)
    config = WorkerConfig(topics=tuple(args.topic), concurrency=args.concurrency,
                          lease_s=settings.lease_s, poll_interval_s=settings.poll_interval_s,
                          shutdown_timeout_s=args.shutdown_timeout,
                          **({"name": args.name} if args.name else {}))

    async def body(svc: Services) -> int:
        print(f"warden worker {config.name}: topics {', '.join(config.topics)}",
              file=sys.stderr, flush=True)
        await Worker(svc.db, handler, config).run(stop)
        return 0

    return await _with_db(settings, body)


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from engine.demo import run_demo

    return await run_demo(settings, approve=args.approve, reset=args.reset)


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
            _print_json({"workflow_id": stored.row.workflow_id, "version": stored.row.version,
                         "digest": stored.row.digest, "created": stored.created})
        else:
            note = "" if stored.created else " (already stored, unchanged)"
            print(f"{stored.row.workflow_id} {stored.row.version}{note}")
        return 0

    return await _with_db(settings, body)


async def cmd_runs_start(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        started = await runs.start(
            svc, tenant_id=args.tenant,
            workflow_id=args.workflow_id, input=args.input, created_by=args.principal,
            idempotency_key=args.idempotency_key, version=args.version)
        if args.json:
            _print_json({**views.run(started.run), "replayed": started.replayed})
        else:
            print(started.run.run_id)
        return 0

    return await _with_db(settings, body)


async def cmd_runs_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        detail = await runs.detail(svc, None, args.run_id)
        if args.json:
            _print_json(views.run_detail(detail))
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

    return await _with_db(settings, body)


async def cmd_runs_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await runs.page(svc.db, args.tenant, status=args.status,
                               workflow_id=args.workflow, limit=args.limit)
        if args.json:
            _print_json([views.run(r) for r in rows])
            return 0
        for r in rows:
            print(f"{r.run_id}  {r.status.value:<10} {r.workflow_id}@{r.workflow_version}  "
                  f"{r.created_at:%Y-%m-%d %H:%M:%S}  by {r.created_by}")
        return 0

    return await _with_db(settings, body)


async def cmd_runs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from engine import stopping

    async def body(svc: Services) -> int:
        row = await stopping.cancel(svc.db, tenant_id=None, run_id=args.run_id,
                                    by=args.principal, reason=args.reason)
        print(f"run {row.run_id} {row.status.value}")
        return 0

    return await _with_db(settings, body)


async def cmd_runs_rerun(args: argparse.Namespace, settings: Settings) -> int:
    from engine import reruns

    async def body(svc: Services) -> int:
        if args.dry_run:
            plan = await reruns.plan(svc, tenant_id=None, run_id=args.run_id,
                                     from_step=args.from_step)
            _print_json({"dry_run": True, **plan.to_doc()})
            return 0
        plan, started = await reruns.rerun(svc, tenant_id=None, run_id=args.run_id,
                                           from_step=args.from_step, created_by=args.principal)
        if args.json:
            _print_json({"run": views.run(started.run), "plan": plan.to_doc()})
        else:
            print(started.run.run_id)
        return 0

    return await _with_db(settings, body)


async def cmd_workflows_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await workflows.list_latest(svc.db, args.tenant)
        if args.json:
            _print_json([{"workflow_id": r.workflow_id, "version": r.version, "name": r.name}
                         for r in rows])
            return 0
        for r in rows:
            print(f"{r.workflow_id:<32} {r.version:<10} {r.name}")
        return 0

    return await _with_db(settings, body)


async def cmd_workflows_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await workflows.versions(svc.db, args.tenant, args.workflow_id)
        if args.json:
            _print_json([{"version": r.version, "digest": r.digest, "definition": r.definition,
                          "created_by": r.created_by, "created_at": r.created_at.isoformat()}
                         for r in rows])
            return 0
        for r in rows:
            print(f"{r.workflow_id} {r.version}  {r.digest[:12]}  by {r.created_by} "
                  f"at {r.created_at:%Y-%m-%d %H:%M}")
        print(rows[0].source.rstrip())
        return 0

    return await _with_db(settings, body)


async def cmd_approvals_list(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        rows = await approvals.page(svc.db, tenant_id=args.tenant, status=args.status,
                                    limit=args.limit)
        if args.json:
            _print_json([views.approval(a) for a in rows])
            return 0
        for a in rows:
            print(f"{a.approval_id}  {a.status.value:<10} run {a.run_id}  step {a.step_id}  "
                  f"requested by {a.requested_by}")
        if not rows:
            print("no approvals")
        return 0

    return await _with_db(settings, body)


def _decide(approve: bool) -> Command:
    async def command(args: argparse.Namespace, settings: Settings) -> int:
        async def body(svc: Services) -> int:
            row = await approvals.decide(svc.db, tenant_id=args.tenant,
                                         approval_id=args.approval_id, approve=approve,
                                         principal=args.principal, reason=args.reason,
                                         job_hash=args.job_hash)
            if args.json:
                _print_json(views.approval(row))
            else:
                print(f"approval {row.approval_id} {row.status.value} by {row.decided_by}")
            return 0

        return await _with_db(settings, body)

    return command


async def cmd_timeline(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        events = await timeline.all_events(svc.db, None, args.run_id)
        if args.json:
            _print_json([views.event(e) for e in events])
            return 0
        for line in format_timeline(events):
            print(line)
        return 0

    return await _with_db(settings, body)


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        if args.run_id is not None:
            results = [("", args.run_id, await timeline.verify(svc.db, args.run_id))]
        else:
            results = await timeline.verify_all(svc.db, args.tenant)
        broken = [(t, r) for t, r, ok in results if not ok]
        if args.json:
            _print_json({"checked": len(results),
                         "broken": [{"tenant_id": t, "run_id": str(r)} for t, r in broken]})
        else:
            for tenant, run_id in broken:
                print(f"TAMPERED: run {run_id} {tenant}".rstrip())
            print(f"{len(results)} run(s) checked, {len(broken)} with a broken chain")
        return 1 if broken else 0

    return await _with_db(settings, body)


async def cmd_policy_apply(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise errors.InvalidInput("FILE", f"cannot read {path}: {exc.strerror}") from exc

    async def body(svc: Services) -> int:
        stored = await governance.store_bundle(
            svc.db, tenant_id=args.tenant, source=source,
            media_type="application/json" if path.suffix == ".json" else None,
            created_by=args.principal)
        activated = None
        if args.activate:
            activated = await governance.activate(svc.db, tenant_id=args.tenant,
                                                  snapshot_hash=stored.row.snapshot_hash,
                                                  activated_by=args.principal)
        if args.json:
            _print_json({"snapshot_hash": stored.row.snapshot_hash, "created": stored.created,
                         "activated": activated is not None})
        else:
            note = "" if stored.created else " (already stored)"
            print(f"{stored.row.snapshot_hash}{note}"
                  + (f"\nactive for tenant {args.tenant}" if activated else ""))
        return 0

    return await _with_db(settings, body)


async def cmd_policy_activate(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        row = await governance.activate(svc.db, tenant_id=args.tenant,
                                        snapshot_hash=args.snapshot_hash,
                                        activated_by=args.principal)
        print(f"{row.snapshot_hash} active for tenant {row.tenant_id} "
              f"(previous: {row.previous_hash or 'none'})")
        return 0

    return await _with_db(settings, body)


async def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        active = await governance.active_pointer(svc.db, args.tenant)
        snapshots = await governance.snapshots(svc.db, args.tenant)
        if args.json:
            _print_json({"tenant_id": args.tenant, "active": active,
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

    return await _with_db(settings, body)


async def cmd_policy_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    labels = dict(item.split("=", 1) for item in args.label)

    async def body(svc: Services) -> int:
        facts = Facts(tenant_id=args.tenant, workflow_id=args.workflow or "", step_id=args.step
                      or "", topic=args.topic, risk_tags=tuple(args.risk_tag),
                      capability=args.capability, labels=labels, input=args.input)
        async with svc.db.connection() as conn:
            evaluated = await svc.policies.evaluate(conn, args.tenant, facts)
        _print_json(evaluated.to_doc())
        return 0

    return await _with_db(settings, body)


def _label(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"--label takes key=value, got {value!r}")
    return value


async def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from engine import apikeys

    async def body(svc: Services) -> int:
        row, plaintext = await apikeys.create(
            svc.db, apikeys.server_secret(settings), name=args.name,
            roles=[apikeys.Role(r) for r in args.role],
            tenants=[*([args.tenant] if args.tenant else []), *(args.tenant_grant or [])]
            or ["default"],
            created_by=args.principal)
        if args.json:
            _print_json({"key_id": row.key_id, "name": row.name, "roles": row.roles,
                         "tenants": row.tenants, "key": plaintext})
        else:
            print(plaintext)
            print(f"key {row.key_id} ({row.name}): roles {', '.join(row.roles)}; tenants "
                  f"{', '.join(row.tenants)}. Shown once: only a hash is stored.",
                  file=sys.stderr)
        return 0

    return await _with_db(settings, body)


async def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from engine import apikeys

    async def body(svc: Services) -> int:
        rows = await apikeys.list_keys(svc.db)
        if args.json:
            _print_json([{"key_id": k.key_id, "name": k.name, "roles": k.roles,
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

    return await _with_db(settings, body)


async def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from engine import apikeys

    async def body(svc: Services) -> int:
        row = await apikeys.revoke(svc.db, args.key_id)
        print(f"key {row.key_id} ({row.name}) revoked")
        return 0

    return await _with_db(settings, body)


# ---------------------------------------------------------------- parser

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warden", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(subparsers: Any, name: str, func: Command, help_text: str,
            read: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text,
                                                           description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true",
                       help="print one JSON document" if read else "print the result as JSON")
        return p

    add(sub, "migrate", cmd_migrate, "apply database migrations (Alembic) up to the newest")
    add(sub, "serve", cmd_serve, "run the scheduler and the reaper")
    p = add(sub, "worker", cmd_worker, "run a Python worker for some topics")
    p.add_argument("--topic", action="append", required=True, help="a topic to claim (repeat)")
    p.add_argument("--handler", required=True, help="module:function to call per job")
    p.add_argument("--concurrency", type=int, default=4, help="jobs at once (default 4)")
    p.add_argument("--name", help="worker name recorded on claimed jobs")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds to let in-flight jobs finish on SIGTERM (default 30)")
    p = add(sub, "demo", cmd_demo, "run the incident-remediation demo with sample workers")
    p.add_argument("--approve", action="store_true",
                   help="approve the waiting demo run as a demo operator and run it to the end")
    p.add_argument("--reset", action="store_true", help="start from an empty embedded database")

    wf = sub.add_parser("workflows", help="store workflow definitions").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(wf, "apply", cmd_workflows_apply, "validate and store a definition (YAML or JSON)")
    p.add_argument("file", metavar="FILE")

    add(wf, "list", cmd_workflows_list, "the newest version of each workflow", read=True)
    p = add(wf, "show", cmd_workflows_show, "every version of a workflow", read=True)
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")

    rn = sub.add_parser("runs", help="start and inspect runs").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(rn, "start", cmd_runs_start, "start a run of a workflow's newest version")
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--input", type=_json_arg, default={}, help="the run input as a JSON object")
    p.add_argument("--idempotency-key", help="start at most one run per key")
    p.add_argument("--version", help="a specific workflow version (default: newest)")
    p = add(rn, "show", cmd_runs_show, "a run with its steps", read=True)
    p.add_argument("run_id", type=_uuid, metavar="RUN_ID")
    p = add(rn, "list", cmd_runs_list, "runs, newest first", read=True)
    p.add_argument("--status", type=RunStatus, choices=list(RunStatus))
    p.add_argument("--workflow", help="only runs of this workflow id")
    p.add_argument("--limit", type=int, default=50)
    p = add(rn, "cancel", cmd_runs_cancel, "cancel a run")
    p.add_argument("run_id", type=_uuid, metavar="RUN_ID")
    p.add_argument("--reason", help="why (recorded in the timeline)")
    p = add(rn, "rerun", cmd_runs_rerun, "rerun a finished run from a step")
    p.add_argument("run_id", type=_uuid, metavar="RUN_ID")
    p.add_argument("--from-step", required=True, help="the step to run again, with its "
                   "descendants")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    ap = sub.add_parser("approvals", help="the approvals queue").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(ap, "list", cmd_approvals_list, "list approvals (default: pending)", read=True)
    p.add_argument("--status", type=ApprovalStatus, default=ApprovalStatus.PENDING,
                   choices=list(ApprovalStatus))
    p.add_argument("--limit", type=int, default=100)
    for name, approve in (("approve", True), ("reject", False)):
        p = add(ap, name, _decide(approve), f"{name} a pending approval")
        p.add_argument("approval_id", type=_uuid, metavar="APPROVAL_ID")
        p.add_argument("--reason", help="why (recorded in the timeline)")
        p.add_argument("--job-hash", help="the job hash you reviewed; refused if it changed")

    po = sub.add_parser("policy", help="policy bundles and snapshots").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(po, "apply", cmd_policy_apply, "validate and store a policy bundle as a snapshot")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--activate", action="store_true", help="make it the tenant's active policy")
    p = add(po, "activate", cmd_policy_activate, "make a stored snapshot the active one")
    p.add_argument("snapshot_hash", metavar="SNAPSHOT_HASH")
    add(po, "show", cmd_policy_show, "the active snapshot and the stored ones", read=True)
    p = add(po, "evaluate", cmd_policy_evaluate,
            "what the active policy decides for some facts (records nothing)", read=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--input", type=_json_arg, default={}, help="the input as JSON")
    p.add_argument("--workflow", help="workflow id")
    p.add_argument("--step", help="step id")
    p.add_argument("--risk-tag", action="append", default=[], help="a risk tag (repeat)")
    p.add_argument("--capability")
    p.add_argument("--label", action="append", default=[], type=_label,
                   help="key=value (repeat)")

    ks = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(ks, "create", cmd_keys_create, "create an API key (printed once)")
    p.add_argument("--role", action="append", required=True,
                   choices=["submitter", "approver", "operator", "admin", "worker"],
                   help="a role (repeat for several)")
    p.add_argument("--grant", dest="tenant_grant", action="append",
                   help="a tenant the key may act for (repeat; default: the --tenant)")
    p.add_argument("--name", help="the principal the key acts as (default: key-<id>)")
    add(ks, "list", cmd_keys_list, "list keys (never their secrets)", read=True)
    p = add(ks, "revoke", cmd_keys_revoke, "revoke a key")
    p.add_argument("key_id", metavar="KEY_ID")

    p = add(sub, "timeline", cmd_timeline, "print a run's timeline", read=True)
    p.add_argument("run_id", type=_uuid, metavar="RUN_ID")
    au = sub.add_parser("audit", help="audit checks").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(au, "verify", cmd_audit_verify, "verify timeline hash chains (exit 1 if broken)",
            read=True)
    p.add_argument("run_id", type=_uuid, nargs="?", metavar="RUN_ID")

    for action in _all_subparsers(parser):
        action.add_argument("--tenant", default=None,
                            help="tenant (default: 'default' for writes, all for reads)")
        action.add_argument("--as", dest="principal", default="cli",
                            help="the principal recorded as actor (default: cli)")
    return parser


def _all_subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                nested = _all_subparsers(child)
                found.extend(nested or [child])
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load()
        if args.tenant is None and args.func in _WRITES:
            args.tenant = "default"
        command: Command = args.func
        return asyncio.run(command(args, settings))
    except errors.WardenError as exc:
        print(f"warden: {exc}", file=sys.stderr)
        return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), 1)
    except KeyboardInterrupt:
        return 130


# Commands that act for one tenant: --tenant defaults to "default" (reads span tenants).
_WRITES: frozenset[Command] = frozenset({
    cmd_workflows_apply, cmd_runs_start, cmd_policy_apply, cmd_policy_activate,
    cmd_policy_show, cmd_policy_evaluate, cmd_runs_list, cmd_workflows_list,
    cmd_workflows_show})

if __name__ == "__main__":
    sys.exit(main())
