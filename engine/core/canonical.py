"""Canonical JSON and its sha256: the one way Warden names content by hash; and what a JSON
value must be for PostgreSQL to store it.

Used for workflow digests, idempotency request digests, and (governance) policy
snapshots and job hashes. Canonical = sorted keys, no insignificant whitespace, UTF-8.

Untrusted JSON (request bodies, definition documents, CLI flags) is decoded with
``DECODE_HOOKS`` and then checked with ``unstorable``, which names the first value jsonb
and text cannot hold, by its path (``steps.a.input[0]``): NaN and ±Infinity (JSON has
none, Python's json reads them), a float that overflows to infinity (``1e400``), an
integer beyond Python's digit limit for str/int conversion, a lone UTF-16 surrogate
(``"\\ud800"``: no UTF-8 encoding) and U+0000.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from engine.core.errors import InvalidInput


class Unstorable:
    """What the decoding hooks return in place of a number they cannot represent, so that
    ``unstorable`` can name its path (json.loads' own errors carry no path)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _constant(name: str) -> Unstorable:
    return Unstorable(f"{name} is not a JSON number")


def _float(text: str) -> float | Unstorable:
    value = float(text)
    return value if math.isfinite(value) else Unstorable(f"{text[:20]} is out of range")


def _int(text: str) -> int | Unstorable:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return Unstorable(f"an integer of {len(text.lstrip('-'))} digits is too large")


DECODE_HOOKS: dict[str, Any] = {"parse_constant": _constant, "parse_float": _float,
                                "parse_int": _int}


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains U+0000"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (U+{ord(text[exc.start]):04X}), not valid Unicode"
    return None


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _text_problem(value)
    if isinstance(value, Unstorable):
        return value.message
    if isinstance(value, float) and not math.isfinite(value):
        name = "NaN" if math.isnan(value) else ("-Infinity" if value < 0 else "Infinity")
        return f"{name} is not a JSON number"
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            str(value)
        except ValueError:
            return "the integer is too large"
    return None


def unstorable(value: Any) -> tuple[str, str] | None:
    """(path, problem) of the first value, in document order, that JSON in PostgreSQL
    cannot hold; None if there is none. The path of the whole value is ``""``.

    Iterative, so a deep value cannot exhaust the stack."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            children: list[tuple[str, Any]] = []
            for key, child in item.items():
                problem = _text_problem(key) if isinstance(key, str) else None
                if problem is not None:  # the path must be printable: escape the key
                    shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    return (f"{path}.{shown}" if path else shown), f"the key {problem}"
                where = f"{path}.{key}" if path else str(key)
                children.append((where, child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
        else:
            problem = _scalar_problem(item)
            if problem is not None:
                return path, problem
    return None


def require_storable(value: Any, field: str) -> None:
    """Raises InvalidInput naming ``field`` (and the path inside it) unless ``value`` is
    JSON that PostgreSQL can store."""
    found = unstorable(value)
    if found is not None:
        path, problem = found
        where = field + (path if path.startswith("[") or not path else f".{path}")
        raise InvalidInput(where, problem)


def _refused(value: Any, exc: Exception) -> Exception:
    found = unstorable(value)
    if found is None:
        return exc
    path, problem = found
    return InvalidInput(path or "value", problem)


def canonical_bytes(value: Any) -> bytes:
    """The canonical JSON of ``value`` in UTF-8. Raises InvalidInput naming the path of a
    value that has none: NaN, ±Infinity, a lone surrogate, an integer too large to print."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:  # UnicodeEncodeError is a ValueError
        raise _refused(value, exc) from exc


def canonical_json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
