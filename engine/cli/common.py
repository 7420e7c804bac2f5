"""What every command shares: exit codes, JSON output, argument types, the database."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from uuid import UUID

from engine.core import errors
from engine.core.settings import Settings
from engine.governance.policy import Verdict
from engine.process.runtime import database_url
from engine.runs.services import Services
from engine.store import Database, session

EXIT_CODES: tuple[tuple[type[errors.WardenError], int], ...] = (
    (errors.InvalidDefinition, 2), (errors.InvalidInput, 2), (errors.ConfigError, 2),
    (errors.NotFound, 3), (errors.Conflict, 4), (errors.InvalidTransition, 4),
    (errors.Forbidden, 5), (errors.PolicyDenied, 5),
    (errors.DatabaseUnavailable, 6), (errors.SchemaMismatch, 6),
)


Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def uuid_arg(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid id: {value!r}") from None


def json_arg(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--input is not valid JSON: {exc}") from None


async def with_db(settings: Settings, body: Callable[[Services], Awaitable[int]], *,
                  acting: argparse.Namespace | None = None) -> int:
    """Runs ``body`` against the database; ``acting``: the command's arguments, whose
    ``principal`` (--as) is resolved to the actor it records (`resolve_actor`)."""
    from engine.store.migrate import require_head

    with database_url(settings, announce=False) as url:
        await asyncio.to_thread(require_head, url)
        async with Database(url, max_size=4) as db:
            if acting is not None:
                acting.principal = await resolve_actor(db, acting.principal)
            return await body(services_for(db, settings))


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
    return Services.create(db, policy_default=Verdict(settings.policy_default),
                           approval_expires_ms=settings.approval_expires_ms)
