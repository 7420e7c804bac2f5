"""`warden audit`: verify the timeline's keyed chains (and their anchors), write anchors,
export a run's evidence and check an export offline, rotate the chain key."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.cli.common import print_json, with_db
from engine.core.errors import ConfigError, InvalidInput
from engine.core.settings import Settings
from engine.governance.apikeys import server_secret
from engine.runs import anchors, evidence, timeline
from engine.runs.services import Services
from engine.store import retention as retention_q


def anchor_key_for(settings: Settings) -> bytes:
    """The anchors' signing key, derived from the server secret (never stored)."""
    return anchors.anchor_key(server_secret(settings))


def _anchor_dir(args: argparse.Namespace, settings: Settings) -> Path:
    directory: Path | None = getattr(args, "dir", None) or settings.audit_anchor_dir
    if directory is None:
        raise ConfigError("no anchor directory: pass --dir or set WARDEN_AUDIT_ANCHOR_DIR")
    return Path(directory)


async def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    key = anchor_key_for(settings) if args.anchors is not None else b""

    async def body(svc: Services) -> int:
        checked, broken = await timeline.check(svc.db, args.tenant, args.run_id)
        async with svc.db.connection() as conn:
            archived = await retention_q.archived(conn, args.tenant, args.run_id)
        found: list[anchors.Problem] = []
        log = None
        if args.anchors is not None:
            log = anchors.read(Path(args.anchors), key)
            found = [*(log.problems or []), *await anchors.check(svc.db, log)]
            if args.tenant is not None or args.run_id is not None:
                found = [p for p in found if p.run_id is None or (
                    (args.tenant is None or p.tenant_id == args.tenant)
                    and (args.run_id is None or p.run_id == args.run_id))]
        # archived: dropped by retention; with anchors, only runs a retention line names
        shown = [a for a in archived if log is None
                 or (a.tenant_id, a.run_id) in log.retained]
        if args.json:
            doc: dict[str, object] = {"checked": checked, "broken": [
                {"tenant_id": p.tenant_id, "run_id": str(p.run_id), "seq": p.seq,
                 "problem": p.problem} for p in broken],
                "archived": [_archived_doc(a, log) for a in shown]}
            if log is not None:
                doc["anchors"] = {"lines": log.lines, "points": len(log.points or []),
                                  "problems": [p.doc() for p in found]}
            print_json(doc)
        else:
            for p in broken:
                print(f"TAMPERED: run {p.run_id} ({p.tenant_id}) at seq {p.seq}: {p.problem}")
            for a in found:
                where = (f"run {a.run_id} ({a.tenant_id}) at seq {a.seq}"
                         if a.run_id is not None else f"anchor line {a.line}")
                print(f"TAMPERED: {where}: {a.problem}")
            for run in shown:
                line = _archived_doc(run, log)["anchor_line"]
                anchored = f", retention anchor line {line}" if log is not None else ""
                print(f"ARCHIVED: run {run.run_id} ({run.tenant_id}) at seq {run.seq} in "
                      f"{run.archive}{anchored}")
            print(f"{checked} run(s) checked, {len(broken)} with a broken chain, "
                  f"{len(shown)} archived")
            if log is not None:
                print(f"{log.lines} anchor line(s), {len(log.points or [])} anchored head(s), "
                      f"{len(found)} difference(s)")
        return 1 if broken or found else 0

    return await with_db(settings, body)


def _archived_doc(a: retention_q.Archived, log: anchors.AnchorLog | None) -> dict[str, object]:
    retained = None if log is None else log.retained.get((a.tenant_id, a.run_id))
    return {"tenant_id": a.tenant_id, "run_id": str(a.run_id), "seq": a.seq, "hash": a.hash,
            "archive": a.archive, "archive_sha256": a.archive_sha256,
            "archived_at": a.archived_at.isoformat(),
            "anchor_line": None if retained is None else retained.point.line}


async def cmd_audit_anchor(args: argparse.Namespace, settings: Settings) -> int:
    directory = _anchor_dir(args, settings)
    key = anchor_key_for(settings)

    async def body(svc: Services) -> int:
        try:
            line, runs, broken = await anchors.anchor(svc.db, directory, key)
        except anchors.AnchorFileBroken as exc:
            print(f"{directory / anchors.FILE_NAME} does not verify, nothing written: {exc}")
            return 1
        if args.json:
            print_json({"file": str(directory / anchors.FILE_NAME), "line": line, "runs": runs,
                        "refused": [{"tenant_id": p.tenant_id, "run_id": str(p.run_id),
                                     "seq": p.seq, "problem": p.problem} for p in broken]})
        else:
            for p in broken:
                print(f"NOT ANCHORED: run {p.run_id} ({p.tenant_id}) has a broken chain at seq "
                      f"{p.seq}: {p.problem}")
            if line is None:
                print("no run with a sound chain changed since the last anchor; nothing "
                      "written")
            else:
                print(f"anchored {runs} run head(s) at line {line} of "
                      f"{directory / anchors.FILE_NAME}")
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

    return await with_db(settings, body, acting=args)



def _scope(args: argparse.Namespace) -> evidence.Scope:
    if (args.run is None) == (args.tenant is None):
        raise InvalidInput("--run", "give --run or --tenant, exactly one")
    if args.run is not None and (args.since is not None or args.until is not None):
        raise InvalidInput("--since", "--since and --until go with --tenant, not --run")
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise InvalidInput("--since", "must be before --until")
    return evidence.Scope(run_id=args.run, tenant_id=args.tenant, since=args.since,
                          until=args.until)


async def cmd_audit_export(args: argparse.Namespace, settings: Settings) -> int:
    scope = _scope(args)
    key = anchor_key_for(settings)
    anchor_dir: Path | None = args.anchors or settings.audit_anchor_dir
    log = anchors.read(anchor_dir, key) if anchor_dir is not None else None
    if (log is not None and anchor_dir is not None and log.problems
            and (anchor_dir / anchors.FILE_NAME).exists()):
        raise InvalidInput("--anchors", f"the anchors in {anchor_dir} do not verify (`warden "
                           f"audit verify --anchors {anchor_dir}` says why)")

    async def body(svc: Services) -> int:
        lines = await evidence.export(svc.db, scope, key, log)
        text = "".join(f"{line}\n" for line in lines)
        if args.output is None:
            sys.stdout.write(text)
        else:
            Path(args.output).write_text(text, encoding="utf-8")
            print(f"{len(lines)} line(s) written to {args.output}", file=sys.stderr)
        return 0

    return await with_db(settings, body)


def _existing_secret(settings: Settings) -> bytes:
    if not os.environ.get("WARDEN_SECRET_KEY") and not (settings.data_dir
                                                         / "secret_key").exists():
        raise ConfigError("verify-export needs the server secret that sealed the export: "
                          "set WARDEN_SECRET_KEY")
    return server_secret(settings)


async def cmd_audit_verify_export(args: argparse.Namespace, settings: Settings) -> int:
    key = anchors.anchor_key(_existing_secret(settings))
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput("FILE", f"cannot read {args.file}: {exc}") from exc
    checked = evidence.verify_export(text, key)
    if args.json:
        print_json(checked.doc())
    else:
        for line, problem in checked.problems:
            print(f"TAMPERED: line {line}: {problem}")
        print(f"{checked.runs} run(s), {checked.events} event(s), {checked.anchored} anchored "
              f"head(s); {len(checked.problems)} problem(s)")
    return 1 if checked.problems else 0
