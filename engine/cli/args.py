"""What the command line's parser needs before any command runs: the argument types, the
Command type and the exit codes. Light imports only: `warden worker` builds the same parser
as every other command, and what this module imports, every process pays for at start
(engine/cli/main.py imports each command's module only when that command runs).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from engine.core import errors
from engine.core.canonical import DECODE_HOOKS, require_storable, unstorable
from engine.core.settings import Settings

EXIT_CODES: tuple[tuple[type[errors.WardenError], int], ...] = (
    (errors.InvalidDefinition, 2), (errors.InvalidInput, 2), (errors.ConfigError, 2),
    (errors.NotFound, 3), (errors.Conflict, 4), (errors.InvalidTransition, 4),
    (errors.Forbidden, 5), (errors.PolicyDenied, 5),
    (errors.DatabaseUnavailable, 6), (errors.SchemaMismatch, 6),
)


Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def id_arg(value: str) -> str:
    """A run or approval id, or a prefix of it (resolved against the database)."""
    cleaned = value.strip()
    if not cleaned:
        raise argparse.ArgumentTypeError("an id or id prefix is required")
    return cleaned


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


def time_arg(value: str) -> datetime:
    """An ISO 8601 date or time; without a zone it is UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


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


def data_arg(value: str) -> Any:
    """--data: any JSON value, decoded as request bodies are."""
    try:
        return json.loads(value, **DECODE_HOOKS)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--data is not valid JSON: {exc}") from None


def label_arg(value: str) -> str:
    if "=" not in value:
        raise argparse.ArgumentTypeError(f"--label takes key=value, got {value!r}")
    return value


_UNITS = {"d": timedelta(days=1), "w": timedelta(weeks=1)}
# a partition may go only once its month is over and the cutoff at least a day old
# (sql/functions/retention_partitions.sql); a century is more than anyone keeps
MIN_AGE, MAX_AGE = timedelta(days=1), timedelta(days=36500)


def older_than_arg(value: str) -> timedelta:
    """--older-than: whole days (90d) or weeks (13w), from 1d to 36500d."""
    found = re.fullmatch(r"([0-9]{1,6})([dw])", value.strip())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an age: give whole days or weeks, such as 90d or 13w")
    age = int(found.group(1)) * _UNITS[found.group(2)]
    if age < MIN_AGE:
        raise argparse.ArgumentTypeError(
            f"{value!r} is less than 1d: a partition younger than a day may still get runs")
    if age > MAX_AGE:
        raise argparse.ArgumentTypeError(f"{value!r} is more than 36500d")
    return age
