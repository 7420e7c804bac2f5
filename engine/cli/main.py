"""`warden`: the command line. Every command reads the database from WARDEN_DATABASE_URL
(or the embedded server) and prints JSON with --json on read commands.

Exit codes scripts can rely on: 0 done, 1 error, 2 bad usage or input, 3 not found,
4 conflict (idempotency, already decided), 5 refused (policy, self-approval),
6 database unavailable or schema not migrated.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from engine.cli.args import (
    EXIT_CODES,
    Command,
    data_arg,
    id_arg,
    json_arg,
    label_arg,
    older_than_arg,
    time_arg,
    unreadable_argument,
    uuid_arg,
)
from engine.core import errors
from engine.core.enums import ApprovalStatus, RunStatus
from engine.core.settings import Settings, load
from engine.process import runtime


def _lazy(module: str, name: str, *made_with: Any) -> Command:
    """The command `name` of engine/cli/<module>.py, imported only when it runs: a
    process pays at start for what its own command needs, not for every command's
    imports (a `warden worker` listens a third sooner: bench/README.md, session 19).
    `made_with`: the arguments of a function that makes the command."""

    def command(args: argparse.Namespace, settings: Settings) -> Coroutine[Any, Any, int]:
        found = getattr(importlib.import_module(f"engine.cli.{module}"), name)
        chosen: Command = found(*made_with) if made_with else found
        return chosen(args, settings)

    # where the command lives, for a reader and for tests/unit/test_cli_imports.py
    command.__module__, command.__name__ = f"engine.cli.{module}", name
    command.__qualname__ = name
    return command


cmd_audit_anchor = _lazy("audit", "cmd_audit_anchor")
cmd_audit_export = _lazy("audit", "cmd_audit_export")
cmd_audit_rotate_key = _lazy("audit", "cmd_audit_rotate_key")
cmd_audit_verify = _lazy("audit", "cmd_audit_verify")
cmd_audit_verify_export = _lazy("audit", "cmd_audit_verify_export")
cmd_demo = _lazy("daemons", "cmd_demo")
cmd_migrate = _lazy("daemons", "cmd_migrate")
cmd_serve = _lazy("daemons", "cmd_serve")
cmd_worker = _lazy("worker", "cmd_worker")
cmd_events_send = _lazy("events", "cmd_events_send")
cmd_queues_list = _lazy("fleet", "cmd_queues_list")
cmd_workers_list = _lazy("fleet", "cmd_workers_list")
cmd_approvals_list = _lazy("governance", "cmd_approvals_list")
cmd_approvals_show = _lazy("governance", "cmd_approvals_show")
cmd_keys_create = _lazy("governance", "cmd_keys_create")
cmd_keys_list = _lazy("governance", "cmd_keys_list")
cmd_keys_revoke = _lazy("governance", "cmd_keys_revoke")
cmd_policy_activate = _lazy("governance", "cmd_policy_activate")
cmd_policy_apply = _lazy("governance", "cmd_policy_apply")
cmd_policy_evaluate = _lazy("governance", "cmd_policy_evaluate")
cmd_policy_show = _lazy("governance", "cmd_policy_show")
cmd_workers_grant = _lazy("governance", "cmd_workers_grant")
cmd_workers_grants = _lazy("governance", "cmd_workers_grants")
cmd_workers_revoke = _lazy("governance", "cmd_workers_revoke")
cmd_retention = _lazy("retention", "cmd_retention")
cmd_runs_cancel = _lazy("runs", "cmd_runs_cancel")
cmd_runs_list = _lazy("runs", "cmd_runs_list")
cmd_runs_rerun = _lazy("runs", "cmd_runs_rerun")
cmd_runs_show = _lazy("runs", "cmd_runs_show")
cmd_runs_start = _lazy("runs", "cmd_runs_start")
cmd_runs_watch = _lazy("runs", "cmd_runs_watch")
cmd_timeline = _lazy("runs", "cmd_timeline")
cmd_workflows_apply = _lazy("runs", "cmd_workflows_apply")
cmd_workflows_list = _lazy("runs", "cmd_workflows_list")
cmd_workflows_show = _lazy("runs", "cmd_workflows_show")
cmd_schedules_list = _lazy("schedules", "cmd_schedules_list")
cmd_schedules_pause = _lazy("schedules", "cmd_schedules_pause")
cmd_schedules_resume = _lazy("schedules", "cmd_schedules_resume")


def decide_command(approve: bool) -> Command:
    return _lazy("governance", "decide_command", approve)


ID_HELP = "the id, or its first hex digits (8, as the page shows them; at least 4)"


def match_arg(value: str) -> tuple[str, str]:
    path, sep, raw = value.partition("=")
    if not sep or not path.startswith("input.") or len(path) <= len("input."):
        raise argparse.ArgumentTypeError(f"--match takes input.FIELD=VALUE, got {value!r}")
    return path, raw


def output_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", choices=["json", "jsonl", "table"],
                   help="json: the API's document ({items, next_cursor}; same as --json); "
                   "jsonl: one item per line; table (default)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warden", description=(__doc__ or '').split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(subparsers: Any, name: str, func: Command, help_text: str,
            read: bool = False, acts: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text,
                                                           description=help_text)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true",
                       help="print one JSON document" if read else "print the result as JSON")
        if acts:  # a write that records its actor; never a read
            p.add_argument("--as", dest="principal", default=None, metavar="PRINCIPAL",
                           help="record PRINCIPAL as the actor (default: os-user@db-role); "
                           "only for a database role that may act for others")
        return p

    add(sub, "migrate", cmd_migrate, "apply database migrations (Alembic) up to the newest")
    add(sub, "serve", cmd_serve, "run the API, the operator page, the scheduler, the reaper "
        "and the reconciler")
    p = add(sub, "worker", cmd_worker, "run a Python worker for some topics")
    p.add_argument("--topic", action="append", required=True, help="a topic to claim (repeat)")
    p.add_argument("--handler", required=True, help="module:function to call per job")
    p.add_argument("--concurrency", type=int, default=4, help="handlers at once (default 4)")
    p.add_argument("--name", help="worker name recorded on claimed jobs")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds to let in-flight jobs finish on SIGTERM (default 30)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve this worker's Prometheus metrics on PORT (0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address for --metrics-port (default 127.0.0.1)")
    p = add(sub, "demo", cmd_demo, "run the incident-remediation demo, serving the "
            "operator page")
    p.description = (
        "Run the incident-remediation demo in one process: its database (embedded unless "
        "WARDEN_DATABASE_URL), the engine, sample workers, and the API and operator page "
        "on WARDEN_HTTP_ADDR. Prints the page's URL and a demo operator key, follows the "
        "run, says how to decide its approval gate, and serves until the run ends "
        "(exit 0 if it succeeded) or Ctrl-C/SIGTERM (exit 0). A second start picks up "
        "the run left open.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--approve", action="store_true",
                      help="approve the waiting demo run as a demo operator and run it to "
                      "the end (serving the page meanwhile)")
    mode.add_argument("--exit-at-gate", action="store_true",
                      help="exit 0 once the run waits at the approval gate, serving no "
                      "API (for scripts)")
    p.add_argument("--reset", action="store_true", help="start from an empty embedded database")

    wf = sub.add_parser("workflows", help="store workflow definitions").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(wf, "apply", cmd_workflows_apply, "validate and store a definition (YAML or JSON)",
            acts=True)
    p.add_argument("file", metavar="FILE")

    p = add(wf, "list", cmd_workflows_list, "the newest version of each workflow", read=True)
    output_arg(p)
    p = add(wf, "show", cmd_workflows_show, "every version of a workflow", read=True)
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")

    rn = sub.add_parser("runs", help="start and inspect runs").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(rn, "start", cmd_runs_start, "start a run of a workflow's newest version", acts=True)
    p.add_argument("workflow_id", metavar="WORKFLOW_ID")
    p.add_argument("--input", type=json_arg, default={}, help="the run input as a JSON object")
    p.add_argument("--idempotency-key", help="start at most one run per key")
    p.add_argument("--version", help="a specific workflow version (default: newest)")
    p.add_argument("--priority", type=int, metavar="0..9",
                   help="orders this run's jobs before their steps' priority (lower first; "
                        "default 5)")
    p.add_argument("--batch", metavar="FILE", help="start one run per line of FILE (JSON "
                   "lines {input, idempotency_key, version}; '-' reads stdin), 1,000 per "
                   "transaction, each line on its own: one output line per run")
    p = add(rn, "show", cmd_runs_show, "a run with its steps: what each is doing or why it "
            "failed", read=True)
    p.add_argument("run_id", type=id_arg, metavar="RUN_ID", help=ID_HELP)
    p = add(rn, "list", cmd_runs_list, "runs, newest first, filtered", read=True)
    p.add_argument("--status", type=RunStatus, choices=list(RunStatus))
    p.add_argument("--denied-by", choices=["policy", "approval"],
                   help="denied runs: by a policy rule or default, or by a human rejection")
    p.add_argument("--workflow", help="only runs of this workflow id")
    p.add_argument("--id-prefix", help="runs whose id starts with these hex digits")
    p.add_argument("--created-after", type=time_arg, metavar="TIME",
                   help="created at or after (ISO 8601; UTC if no zone)")
    p.add_argument("--created-before", type=time_arg, metavar="TIME",
                   help="created before (ISO 8601; UTC if no zone)")
    p.add_argument("--idempotency-key", help="the run this key started")
    p.add_argument("--rerun-of", type=uuid_arg, metavar="RUN_ID", help="the reruns of a run "
                   "(its full id)")
    p.add_argument("--match", action="append", default=[], type=match_arg,
                   metavar="input.FIELD=VALUE", help="input field equals VALUE (JSON if it "
                   "parses, else a string; repeat to match several)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the next page: the next_cursor of the previous one")
    output_arg(p)
    p = add(rn, "watch", cmd_runs_watch, "follow a run's timeline live until it ends (--json: "
            "one event per line)")
    p.add_argument("run_id", type=id_arg, metavar="RUN_ID", help=ID_HELP)
    p = add(rn, "cancel", cmd_runs_cancel, "cancel a run (shows what stops, asks first)",
            acts=True)
    p.add_argument("run_id", type=id_arg, metavar="RUN_ID", help=ID_HELP)
    p.add_argument("--reason", help="why (recorded in the timeline)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p = add(rn, "rerun", cmd_runs_rerun, "rerun a finished run from a step (shows the plan, "
            "asks first)", acts=True)
    p.add_argument("run_id", type=id_arg, metavar="RUN_ID", help=ID_HELP)
    p.add_argument("--from-step", "--from", dest="from_step", required=True,
                   help="the step to run again, with its descendants")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    ev = sub.add_parser("events", help="events for wait_event steps").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(ev, "send", cmd_events_send, "send an event to the wait_event steps waiting (or "
            "about to wait) for its name and key; the same --id again is the same event",
            acts=True)
    p.add_argument("--id", required=True, help="the event's id: sending it again is a no-op")
    p.add_argument("--name", required=True, help="the event name a wait_event step awaits")
    p.add_argument("--key", required=True, help="the correlation its key renders to")
    p.add_argument("--data", type=data_arg, default=None, metavar="JSON",
                   help="the waiting step's output (any JSON; at most 64 KiB)")

    ap = sub.add_parser("approvals", help="the approvals queue").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(ap, "list", cmd_approvals_list, "list approvals, oldest first (default: pending)",
            read=True)
    p.add_argument("--status", type=ApprovalStatus, default=ApprovalStatus.PENDING,
                   choices=list(ApprovalStatus))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--cursor", help="the next page: the next_cursor of the previous one")
    output_arg(p)
    p = add(ap, "show", cmd_approvals_show, "what an approval lets run: step, topic, rendered "
            "input, upstream, constraints, job hash, policy snapshot, requester, expiry",
            read=True)
    p.add_argument("approval_id", type=id_arg, metavar="APPROVAL_ID", help=ID_HELP)
    for name, approve in (("approve", True), ("reject", False)):
        p = add(ap, name, decide_command(approve), f"{name} a pending approval", acts=True)
        p.add_argument("approval_id", type=id_arg, metavar="APPROVAL_ID", help=ID_HELP)
        p.add_argument("--reason", required=not approve,
                       help="why (recorded in the timeline)" + ("" if approve else
                                                                "; required to reject"))
        p.add_argument("--job-hash", help="the job hash you reviewed; refused if it changed")

    wk = sub.add_parser("workers", help="the workers polling for jobs, and what they may "
                        "claim").add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(wk, "list", cmd_workers_list, "live workers: host, pid, topics, jobs in flight, "
            "last heartbeat", read=True)
    p.add_argument("--all", action="store_true", help="also dead and stopped workers "
                   "(kept a day)")
    output_arg(p)
    qu = sub.add_parser("queues", help="the queue of each topic").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(qu, "list", cmd_queues_list, "per topic: depth, oldest claimable age, claims in "
            "the last minute, live workers polling it", read=True)
    output_arg(p)
    sc = sub.add_parser("schedules", help="cron schedules of workflows").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(sc, "list", cmd_schedules_list, "schedules with their next ticks and last run",
            read=True)
    p.add_argument("--all", action="store_true", help="also schedules the newest workflow "
                   "version dropped")
    output_arg(p)
    for name, command in (("pause", cmd_schedules_pause), ("resume", cmd_schedules_resume)):
        p = add(sc, name, command, f"{name} a schedule" + (
            "" if name == "pause" else " from its next tick (missed ticks are not caught up)"),
            acts=True)
        p.add_argument("workflow_id", metavar="WORKFLOW_ID")
        p.add_argument("name", metavar="NAME", help="the schedule's name")

    po = sub.add_parser("policy", help="policy bundles and snapshots").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(po, "apply", cmd_policy_apply, "validate and store a policy bundle as a snapshot",
            acts=True)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--activate", action="store_true", help="make it the tenant's active policy")
    p = add(po, "activate", cmd_policy_activate, "make a stored snapshot the active one", acts=True)
    p.add_argument("snapshot_hash", metavar="SNAPSHOT_HASH")
    add(po, "show", cmd_policy_show, "the active snapshot and the stored ones", read=True)
    p = add(po, "evaluate", cmd_policy_evaluate,
            "what the active policy decides for some facts (records nothing)", read=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--input", type=json_arg, default={}, help="the input as JSON")
    p.add_argument("--workflow", help="workflow id")
    p.add_argument("--step", help="step id")
    p.add_argument("--risk-tag", action="append", default=[], help="a risk tag (repeat)")
    p.add_argument("--capability")
    p.add_argument("--label", action="append", default=[], type=label_arg,
                   help="key=value (repeat)")

    ks = sub.add_parser("keys", help="API keys").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(ks, "create", cmd_keys_create, "create an API key (printed once)", acts=True)
    p.add_argument("--role", action="append", required=True,
                   choices=["submitter", "approver", "operator", "admin", "worker", "auditor"],
                   help="a role (repeat for several)")
    p.add_argument("--grant", dest="tenant_grant", action="append",
                   help="a tenant the key may act for (repeat; default: the --tenant)")
    p.add_argument("--name", help="the principal the key acts as (default: key-<id>)")
    add(ks, "list", cmd_keys_list, "list keys (never their secrets)", read=True)
    p = add(ks, "revoke", cmd_keys_revoke, "revoke a key")
    p.add_argument("key_id", metavar="KEY_ID")

    for name, func, text in (
            ("grant", cmd_workers_grant, "let a login role claim a tenant's jobs of some topics"),
            ("revoke", cmd_workers_revoke, "take a grant back (its claims and writes stop)")):
        p = add(wk, name, func, text, acts=True)
        p.add_argument("role", metavar="ROLE", help="a PostgreSQL login role")
        p.add_argument("--tenant", dest="grant_tenant", required=True,
                       help="a tenant id, or '*' for every tenant")
        p.set_defaults(tenant=None)  # its --tenant names the grant's, not the command's
        p.add_argument("--topic", required=True, help="a topic glob ('*', '?')")
    p = add(wk, "grants", cmd_workers_grants, "who may claim what", read=True)
    p.add_argument("--role", help="only this login role's grants")

    p = add(sub, "timeline", cmd_timeline, "print a run's timeline", read=True)
    p.add_argument("run_id", type=id_arg, metavar="RUN_ID", help=ID_HELP)
    output_arg(p)
    au = sub.add_parser("audit", help="audit checks").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND")
    p = add(au, "verify", cmd_audit_verify, "verify timeline hash chains (exit 1 if broken)",
            read=True)
    p.add_argument("run_id", type=id_arg, nargs="?", metavar="RUN_ID", help=ID_HELP)
    p.add_argument("--anchors", metavar="DIR",
                   help="also compare the chains with the anchors written in DIR")
    p = add(au, "anchor", cmd_audit_anchor,
            "append the chain heads of every run changed since the last anchor to "
            "DIR/anchors.jsonl, signed")
    p.add_argument("--dir", type=Path, help="the anchor directory (default: "
                   "WARDEN_AUDIT_ANCHOR_DIR)")
    p = add(au, "export", cmd_audit_export,
            "write a run's (or a tenant's runs') evidence as sealed JSON lines", read=True)
    p.add_argument("--run", type=uuid_arg, metavar="RUN_ID", help="the run to export")
    p.add_argument("--since", type=time_arg, help="with --tenant: runs created at or after")
    p.add_argument("--until", type=time_arg, help="with --tenant: runs created before")
    p.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--anchors", type=Path, metavar="DIR",
                   help="include the runs' anchored heads (default: WARDEN_AUDIT_ANCHOR_DIR)")
    p = add(au, "verify-export", cmd_audit_verify_export,
            "check an export with no database (exit 1 if anything differs)", read=True)
    p.add_argument("file", metavar="FILE")
    add(au, "rotate-key", cmd_audit_rotate_key,
        "retire the timeline's chain key and make a new one (schema owner only)", acts=True)
    p = add(sub, "retention", cmd_retention,
            "archive the evidence of old finished runs, verify it, then drop their timeline "
            "partitions, recording a retention anchor (schema owner only)")
    p.add_argument("--older-than", type=older_than_arg, required=True, metavar="AGE",
                   help="drop partitions whose runs all finished longer ago than this: "
                   "days or weeks, such as 90d or 13w (at least 1d)")
    p.add_argument("--archive-dir", type=Path, metavar="DIR",
                   help="where the archives go (default: WARDEN_RETENTION_ARCHIVE_DIR)")
    p.add_argument("--anchors", type=Path, metavar="DIR",
                   help="the anchor directory the retention line goes to (default: "
                   "WARDEN_AUDIT_ANCHOR_DIR)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be archived and dropped; change nothing")

    for action in _all_subparsers(parser):
        if "--tenant" not in action._option_string_actions:  # workers grant has its own
            action.add_argument("--tenant", default=None,
                                help="tenant (default: 'default' for writes, all for reads)")
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
    unreadable = unreadable_argument(sys.argv[1:] if argv is None else argv)
    if unreadable is not None:
        print(f"warden: {unreadable}", file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    try:
        settings = load()
        if args.tenant is None and args.func in _WRITES:
            args.tenant = "default"
        command: Command = args.func
        return runtime.run(command(args, settings), settings)
    except errors.WardenError as exc:
        print(f"warden: {exc}", file=sys.stderr)
        return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _stdout_to_devnull()
        return 0
    finally:
        # stdout to a pipe is block-buffered: a reader that went away early
        # (`warden runs list | head -1`) shows at this flush. That is its choice, not an
        # error: say nothing, and let the interpreter's own final flush be quiet too.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


# Commands that act for one tenant: --tenant defaults to "default" (reads span tenants).


_WRITES: frozenset[Command] = frozenset({
    cmd_workflows_apply, cmd_runs_start, cmd_policy_apply, cmd_policy_activate,
    cmd_policy_show, cmd_policy_evaluate, cmd_runs_list, cmd_workflows_list,
    cmd_workflows_show, cmd_schedules_pause, cmd_schedules_resume})
