"""What every command shares: exit codes, JSON output, argument types, the database."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from uuid import UUID

from engine.core import errors
from engine.core.canonical import DECODE_HOOKS, require_storable, unstorable
from engine.core.settings import Settings
from engine.governance.policy import Verdict
from engine.process import tracing
from engine.process.runtime import database_url
from engine.runs.services import Services
from engine.store import Database
from engine.store.scope import across_tenants

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
    """--input: JSON decoded as request bodies are (NaN, 1e400, huge integers, lone
    surrogates and U+0000 refused by their path inside ``input``)."""
    try:
        decoded = json.loads(value, **DECODE_HOOKS)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--input is not valid JSON: {exc}") from None
    try:
        require_storable(decoded, "input")
    except errors.InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return decoded


def unreadable_argument(argv: list[str]) -> str | None:
    """Arguments that were not UTF-8 reach Python as lone surrogates (PEP 383), which no
    database text can hold: the message naming the first such option, or None."""
    for index, arg in enumerate(argv):
        found = unstorable(arg)
        if found is None:
            continue
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
        elif index and argv[index - 1].startswith("-"):
            name = argv[index - 1]
        else:
            name = f"argument {index + 1}"
        return f"{name}: not valid UTF-8 ({found[1]})"
    return None


async def with_db(settings: Settings, body: Callable[[Services], Awaitable[int]], *,
                  service: str = "warden") -> int:
    from engine.store.migrate import require_head

    # traces only when configured (docs/deployment.md#traces); ``service`` names this
    # process's spans unless OTEL_SERVICE_NAME does
    tracing.configure(settings.traces, service=service)
    # operator commands on the host act across tenants (engine/store/scope.py); an API
    # served from here scopes each request itself (api/tenancy.py)
    across_tenants()
    with database_url(settings, announce=False) as url:
        await asyncio.to_thread(require_head, url)
        async with Database(url, max_size=4) as db:
            return await body(services_for(db, settings))


def services_for(db: Database, settings: Settings) -> Services:
    return Services.create(db, policy_default=Verdict(settings.policy_default),
                           approval_expires_ms=settings.approval_expires_ms)
