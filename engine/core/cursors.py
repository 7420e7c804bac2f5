"""Opaque page cursors, one vocabulary for the API and the CLI: a list answers
``next_cursor`` (None on the last page) and takes it back as ``cursor``."""

from __future__ import annotations

import base64
import json
from datetime import datetime


def encode(at: datetime, key: str) -> str:
    """A cursor after the row keyed (at, key) of a keyset-paginated list."""
    raw = json.dumps([at.isoformat(), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(value: str) -> tuple[datetime, str]:
    """The (at, key) a cursor names; ValueError if this code did not issue it."""
    try:
        padded = value + "=" * (-len(value) % 4)
        at, key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(key, str) or "\x00" in key:
            raise ValueError("bad key")
        return datetime.fromisoformat(at), key
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ValueError("cursor is not one this API issued") from None
