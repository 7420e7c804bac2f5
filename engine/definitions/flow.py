"""Flow control fields of a definition (docs/workflows.md): a step's ``concurrency`` and
``rate_limit``, and a workflow's cron ``schedules``.

Kept apart from ``model`` so the step model only gains two fields and a call. Cron
expressions are parsed by cronsim (a maintained parser of the classic 5-field syntax, DST
aware), never by hand; time zones are IANA names read through zoneinfo (tzdata where the
system has none). Pure Python, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from engine.core.errors import InvalidInput
from engine.definitions.docfields import FieldReader, describe, named_entries
from engine.definitions.templates import Reference, parse_references, render

MAX_LIMIT = 1_000_000
MAX_PER_MS = 31 * 24 * 3600 * 1000  # a month: rate_per_ms is a 32-bit integer column
MAX_KEY = 200
MAX_SCHEDULES = 20
_CONCURRENCY_FIELDS = ("key", "limit")
_RATE_FIELDS = ("key", "limit", "per_ms")
_SCHEDULE_FIELDS = ("name", "cron", "timezone", "input", "overlap", "catch_up")
OVERLAPS = ("skip", "allow", "cancel_previous")
CATCH_UPS = ("none", "last", "all")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME_RULE = ("a valid schedule name (letters, digits, '.', '_', '-'; starting with a "
              "letter or digit; at most 64 characters)")


@dataclass(frozen=True)
class ConcurrencyLimit:
    """At most ``limit`` running jobs of the tenant whose key renders the same."""

    key: str  # a constant or a ``${...}`` template, rendered at dispatch
    limit: int


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` claims per ``per_ms`` milliseconds per tenant and rendered key."""

    key: str
    limit: int
    per_ms: int


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    input: Mapping[str, Any]
    overlap: str = "skip"
    catch_up: str = "none"

    def ticks_after(self, after: datetime) -> Iterator[datetime]:
        """The schedule's ticks strictly after ``after``, in UTC, wall-clock times read in
        the schedule's time zone (a tick in a DST gap or fold is cronsim's call)."""
        # cronsim's forward iteration yields ticks strictly after its start
        for tick in CronSim(self.cron, after.astimezone(ZoneInfo(self.timezone))):
            yield tick.astimezone(UTC)

    def latest_at_or_before(self, when: datetime) -> datetime:
        """The schedule's last tick at or before ``when`` (cronsim's reverse iteration is
        strict, hence the microsecond)."""
        start = (when + timedelta(microseconds=1)).astimezone(ZoneInfo(self.timezone))
        return next(iter(CronSim(self.cron, start, reverse=True))).astimezone(UTC)

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "cron": self.cron, "timezone": self.timezone,
                "input": dict(self.input), "overlap": self.overlap, "catch_up": self.catch_up}


def read_concurrency(fields: FieldReader, refs: list[Reference]) -> ConcurrencyLimit | None:
    reader = fields.nested("concurrency", "concurrency", _CONCURRENCY_FIELDS)
    if reader is None:
        return None
    key = _key(reader, refs)
    limit = _limit(reader, "limit")
    return None if key is None or limit is None else ConcurrencyLimit(key, limit)


def read_rate_limit(fields: FieldReader, refs: list[Reference]) -> RateLimit | None:
    reader = fields.nested("rate_limit", "rate_limit", _RATE_FIELDS)
    if reader is None:
        return None
    key = _key(reader, refs)
    limit = _limit(reader, "limit")
    per_ms = reader.integer("per_ms", lo=1, hi=MAX_PER_MS)
    if reader.get("per_ms") is None:
        reader.problem("per_ms", "missing required field 'per_ms' (the window in ms)")
    if key is None or limit is None or per_ms is None:
        return None
    return RateLimit(key, limit, per_ms)


def _key(reader: FieldReader, refs: list[Reference]) -> str | None:
    key = reader.text("key", required=True, max_len=MAX_KEY)
    if key is None:
        return None
    try:
        refs.extend(parse_references(key))
    except InvalidInput as exc:
        reader.problem("key", str(exc))
        return None
    return key


def _limit(reader: FieldReader, name: str) -> int | None:
    if reader.get(name) is None:
        reader.problem(name, f"missing required field {name!r} (an integer >= 1)")
        return None
    return reader.integer(name, lo=1, hi=MAX_LIMIT)


def render_key(key: str, *, run_input: Any, step_outputs: Mapping[str, Any]) -> str:
    """The key a job carries: its template resolved; non-text values as compact JSON."""
    value = render(key, run_input=run_input, step_outputs=step_outputs)
    text = value if isinstance(value, str) else _compact(value)
    if not text:
        raise InvalidInput("key", f"the key {key!r} renders to an empty string")
    return text[:MAX_KEY]


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def read_schedules(top: FieldReader) -> tuple[Schedule, ...]:
    return named_entries(top, "schedules", what="schedule", named="schedule",
                         limit=MAX_SCHEDULES, read=_schedule)


def _schedule(reader: FieldReader) -> Schedule | None:
    reader.check_known(_SCHEDULE_FIELDS, "a schedule")
    name = reader.text("name", required=True, max_len=64, pattern=_NAME, rule=_NAME_RULE)
    cron = reader.text("cron", required=True, max_len=200)
    if cron is not None:
        try:
            CronSim(cron, datetime(2000, 1, 1))
        except CronSimError as exc:
            reader.problem("cron", f"{cron!r} is not a cron expression: {exc}")
            cron = None
    timezone = reader.text("timezone", max_len=64) or "UTC"
    if reader.get("timezone") is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            reader.problem("timezone", f"unknown time zone {timezone!r} (an IANA name such "
                                       "as Europe/Paris or UTC)")
            timezone = ""
    schedule_input = reader.mapping("input") or {}
    if any(parse_references_safe(v) for v in _strings(schedule_input)):
        reader.problem("input", "a schedule's input is literal: it cannot hold ${...} "
                                "references")
    overlap = _choice(reader, "overlap", OVERLAPS, "skip")
    catch_up = _choice(reader, "catch_up", CATCH_UPS, "none")
    if name is None or cron is None or not timezone or overlap is None or catch_up is None:
        return None
    return Schedule(name, cron, timezone, dict(schedule_input), overlap, catch_up)


def parse_references_safe(text: str) -> bool:
    try:
        return bool(parse_references(text))
    except InvalidInput:
        return True


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for child in value.values():
            yield from _strings(child)
    elif isinstance(value, list | tuple):
        for child in value:
            yield from _strings(child)


def _choice(reader: FieldReader, key: str, allowed: tuple[str, ...], default: str) -> str | None:
    value = reader.get(key)
    if value is None:
        return default
    if value not in allowed:
        shown = repr(value) if isinstance(value, str) else describe(value)
        reader.problem(key, f"unknown {key} {shown} (allowed: {', '.join(allowed)})")
        return None
    return str(value)


def concurrency_doc(limit: ConcurrencyLimit | None) -> dict[str, Any] | None:
    return None if limit is None else {"key": limit.key, "limit": limit.limit}


def rate_limit_doc(limit: RateLimit | None) -> dict[str, Any] | None:
    return None if limit is None else {"key": limit.key, "limit": limit.limit,
                                       "per_ms": limit.per_ms}
