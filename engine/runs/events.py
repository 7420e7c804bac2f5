"""Sending events to ``wait_event`` steps (docs/workflows.md#events): the API's
``POST /api/v1/events`` and `warden events send`. SQL clients call warden.send_event,
which this also calls: one write path, one idempotency rule, one wake-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.core.canonical import canonical_bytes, require_storable
from engine.core.errors import Conflict, InvalidInput
from engine.runs.services import Services
from engine.store import flow as flow_q
from engine.store.records import SentEvent

MAX_ID_CHARS = 200
MAX_KEY_CHARS = 512
MAX_DATA_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True)
class Sent:
    event: SentEvent
    created: bool  # False: the same event was sent before; this is the stored one


def validate(event_id: Any, name: Any, key: Any, data: Any) -> None:
    """Raises InvalidInput naming the first bad field; nothing is stored then."""
    if not isinstance(event_id, str) or not event_id.strip():
        raise InvalidInput("id", "must be a non-empty string (the event's idempotency key)")
    if len(event_id) > MAX_ID_CHARS:
        raise InvalidInput("id", f"is {len(event_id)} characters long; the limit is "
                                 f"{MAX_ID_CHARS}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput("name", "must be an event name (letters, digits, '.', '_', ':', "
                                   "'-'; starting with a letter or digit; at most 128 "
                                   "characters)")
    if not isinstance(key, str):
        raise InvalidInput("key", "must be a string (the correlation a wait_event step's "
                                  "key renders to)")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput("key", f"is {len(key)} characters long; the limit is "
                                  f"{MAX_KEY_CHARS}")
    for field, value in (("id", event_id), ("name", name), ("key", key), ("data", data)):
        require_storable(value, field)
    size = len(canonical_bytes(data))
    if size > MAX_DATA_BYTES:
        raise InvalidInput("data", f"is {size} bytes as JSON; the limit is {MAX_DATA_BYTES}")


async def send(svc: Services, *, tenant_id: str, event_id: Any, name: Any, key: Any,
               data: Any, sent_by: str) -> Sent:
    """Stores the event and wakes its waiters, or returns the one stored under this id
    (same content); Conflict when the id was used with other content."""
    validate(event_id, name, key, data)
    async with svc.db.transaction() as conn:
        sent = await flow_q.send_event(conn, tenant_id=tenant_id, event_id=event_id,
                                       name=name, key=key, data=data, sent_by=sent_by,
                                       keep_ms=svc.event_keep_ms)
    if sent.outcome == "conflict":
        raise Conflict(f"event {event_id!r} was already sent with another name, key or data")
    return Sent(sent, sent.outcome == "created")
