"""Reading requests strictly: bounded JSON bodies, known query parameters, opaque cursors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from starlette.requests import Request

from engine.core import cursors
from engine.core.canonical import DECODE_HOOKS, unstorable
from engine.core.errors import WardenError

MAX_JSON_DEPTH = 32
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

T = TypeVar("T")


class BadRequest(WardenError):
    """Malformed request syntax: unreadable JSON, unknown parameter, bad cursor (400)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


def nesting_depth(raw: bytes) -> int:
    """Deepest bracket nesting, found before parsing: json.loads would recurse (and could
    exhaust the stack) on a hostile body long before we could look at the result."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


async def json_body(request: Request, *, required: bool = True, storable: bool = True) -> Any:
    """The body as JSON. ``storable=False``: values jsonb cannot hold (NaN, U+0000, …) are
    left for the caller to refuse where they are (a batch item by item)."""
    raw = await request.body()  # bounded by the app's max_body_size (413 beyond it)
    if not raw.strip():
        if required:
            raise BadRequest("a JSON body is required")
        return {}
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:  # one decoding for every body: numbers JSON cannot carry come back marked
        body = json.loads(raw, **DECODE_HOOKS)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    # NaN, 1e400, 4,301 digits, "\ud800", U+0000: jsonb holds none
    found = unstorable(body) if storable else None
    if found is not None:
        where, problem = found
        raise BadRequest(f"{where or 'the body'}: {problem}", field=where or None)
    return body


def json_object(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})",
                         field=unknown[0])
    return body


def query(request: Request, allowed: set[str]) -> dict[str, str]:
    params = request.query_params
    for name, value in params.multi_items():
        if "\x00" in value:
            raise BadRequest(f"query parameter {name!r} contains U+0000", field=name)
    for name in params:
        if name not in allowed:
            raise BadRequest(f"unknown query parameter {name!r} (allowed: "
                             f"{', '.join(sorted(allowed)) or 'none'})", field=name)
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"query parameter {name!r} given more than once", field=name)
    return dict(params)


_WHOLE = re.compile(r"-?[0-9]+")


def whole_number(params: dict[str, str], name: str, default: int) -> int:
    """An integer query parameter; empty is absent (``?limit=``), as the document says."""
    raw = params.get(name) or ""
    if not raw:
        return default
    try:
        if _WHOLE.fullmatch(raw):  # int() alone would also take " 5", "+5" and "1_000"
            return int(raw)
    except ValueError:  # more digits than int() converts
        pass
    raise BadRequest(f"{name} must be a whole number, got {raw[:40]!r}", name)


def limit(params: dict[str, str], default: int = DEFAULT_LIMIT) -> int:
    return max(1, min(whole_number(params, "limit", default), MAX_LIMIT))  # clamped, as documented


def enum_param(params: dict[str, str], name: str, parse: Callable[[str], T]) -> T | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse(raw)
    except ValueError:
        raise BadRequest(f"{name} {raw[:40]!r} is not a valid value", name) from None


encode_cursor = cursors.encode


def decode_cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    try:
        return cursors.decode(value)
    except ValueError:
        raise BadRequest("cursor is not one this API issued", "cursor") from None


def uuid_cursor(value: str | None) -> tuple[datetime, UUID] | None:
    decoded = decode_cursor(value)
    if decoded is None:
        return None
    try:
        return decoded[0], UUID(decoded[1])
    except ValueError:
        raise BadRequest("cursor is not one this API issued", "cursor") from None


def path_uuid(request: Request, name: str) -> UUID | None:
    """A UUID path parameter, or None when malformed (the caller answers 404)."""
    try:
        return UUID(request.path_params[name])
    except ValueError:
        return None
