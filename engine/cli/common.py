"""What every command shares: exit codes, JSON output, argument types, the database."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from engine.cli.database import with_database
from engine.core import errors
from engine.core.settings import Settings
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import with_start_dispatch
from engine.store import Database, session


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def output_mode(args: argparse.Namespace) -> str:
    """json, jsonl or table: ``--output``, or json for ``--json``."""
    chosen: str | None = getattr(args, "output", None)
    return chosen or ("json" if getattr(args, "json", False) else "table")


def print_list(args: argparse.Namespace, doc: dict[str, Any],
               table: Callable[[list[dict[str, Any]]], Iterable[str]],
               empty: str = "nothing found") -> None:
    """A list as the API answers it (``{"items", "next_cursor"}``, json), one item per line
    (jsonl), or a table for people, with a hint for the next page on stderr."""
    mode = output_mode(args)
    if mode == "json":
        print_json(doc)
        return
    if mode == "jsonl":
        for item in doc["items"]:
            print(json.dumps(item, default=str))
        return
    lines = list(table(doc["items"]))
    for line in lines or [empty]:
        print(line)
    if doc.get("next_cursor"):
        print(f"(more: add --cursor {doc['next_cursor']})", file=sys.stderr)


def confirm(args: argparse.Namespace, question: str) -> bool:
    """True with --yes; otherwise asks on stderr and reads a line from stdin. No answer
    (end of input, as in a script without --yes) refuses, naming --yes."""
    if getattr(args, "yes", False):
        return True
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    if not answer:
        raise errors.InvalidInput("--yes", "no answer on stdin: pass --yes to confirm")
    return answer.strip().lower() in ("y", "yes")


def stamp(value: str | None) -> str:
    """An ISO time of a document as the CLI prints it: date, time and zone (UTC)."""
    if value is None:
        return "-"
    return f"{datetime.fromisoformat(value).astimezone(UTC):%Y-%m-%d %H:%M:%SZ}"


def short(value: Any) -> str:
    """The 8 hex digits the page shows of an id (the CLI accepts them back)."""
    return str(value)[:8]


async def with_db(settings: Settings, body: Callable[[Services], Awaitable[int]], *,
                  service: str = "warden", acting: argparse.Namespace | None = None) -> int:
    """Runs ``body`` with the engine's services (engine/cli/database.py with_database);
    ``acting``: the command's arguments, whose ``principal`` (--as) is resolved to the
    actor it records (`resolve_actor`)."""

    async def with_services(db: Database) -> int:
        if acting is not None:
            acting.principal = await resolve_actor(db, acting.principal)
        return await body(services_for(db, settings))

    return await with_database(settings, with_services, service=service)


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (a bare container)
        return f"uid{os.getuid()}"


async def resolve_actor(db: Database, requested: str | None) -> str:
    """The actor a CLI write records: ``os-user@db-role`` — who ran it and as which
    database role — unless --as names another principal, which only a database role that
    may act for others (a member of the schema owner's role) may do (docs/dba.md, "Who
    the actor is")."""
    identity = await session.identity(db)
    if requested is None:
        return f"{os_user()}@{identity.db_role}"
    if not identity.may_act_for_others:
        raise errors.Forbidden(
            f"--as {requested}: the database role {identity.db_role} may not act for others "
            "(only a member of the role owning schema warden may); leave --as out to act "
            f"as {os_user()}@{identity.db_role}")
    return requested


def services_for(db: Database, settings: Settings) -> Services:
    # starts dispatch their runs' first steps in their own transaction (docs/design.md)
    return with_start_dispatch(Services.create(
        db, policy_default=Verdict(settings.policy_default),
        approval_expires_ms=settings.approval_expires_ms,
        event_keep_ms=settings.event_keep_ms))
