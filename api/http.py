"""Reading requests strictly: bounded JSON bodies, known query parameters, opaque cursors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from starlette.requests import Request

from engine import cursors
from engine.errors import WardenError

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


async def json_body(request: Request, *, required: bool = True) -> Any:
    raw = await request.body()  # bounded by the app's max_body_size (413 beyond it)
    if not raw.strip():
        if required:
            raise BadRequest("a JSON body is required")
        return {}
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    where = _nul_path(body, "")
    if where is not None:  # PostgreSQL text and jsonb cannot hold U+0000
        raise BadRequest(f"{where or 'the body'} contains U+0000", field=where or None)
    return body


def _nul_path(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding U+0000, if any; depth is bounded."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            found = child if "\x00" in key else _nul_path(item, child)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


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


def limit(params: dict[str, str], default: int = DEFAULT_LIMIT) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be a whole number, got {raw[:40]!r}", "limit") from None
    return max(1, min(value, MAX_LIMIT))  # clamped, as documented


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
