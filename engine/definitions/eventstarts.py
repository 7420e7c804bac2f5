"""A workflow's ``on_event`` field (docs/workflows.md#event-started-runs): the event names
that start a run of it, and the run input each renders from the event.

The input's templates have one root of their own, ``event``: ``${event.id}``,
``${event.name}``, ``${event.key}``, ``${event.data}`` and ``${event.data.<path>}``.
They are checked when the workflow is stored and rendered when the event arrives; the
``$${`` escape and unterminated ``${`` are engine.definitions.tokens' (the tokenizer
engine.definitions.templates uses too), and the path grammar and typed values follow
engine.definitions.templates.
Pure Python, no I/O.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.core.errors import InvalidInput, Problem
from engine.definitions.docdecode import child_path
from engine.definitions.docfields import FieldReader, describe, named_entries
from engine.definitions.tokens import tokenize

MAX_SUBSCRIPTIONS = 20
_FIELDS = ("name", "input")
# the event names warden.events accepts (sql/schema/95_events.sql, events_name_format)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_NAME_RULE = ("an event name (letters, digits, '.', '_', ':', '-'; starting with a letter "
              "or digit; at most 128 characters)")
_REF = re.compile(r"event\.(?P<field>id|name|key|data)(?P<path>(?:\.[A-Za-z0-9_-]+)*)")
_FORMS = ("${event.id}, ${event.name}, ${event.key}, ${event.data} or "
          "${event.data.<path>}")


@dataclass(frozen=True)
class EventStart:
    """Events named ``name`` start a run with ``input`` rendered from the event."""

    name: str
    input: Mapping[str, Any]

    def to_doc(self) -> dict[str, Any]:
        return {"name": self.name, "input": copy.deepcopy(dict(self.input))}


@dataclass(frozen=True)
class EventRef:
    text: str
    field: str  # id | name | key | data
    path: tuple[str, ...]


def read_on_event(top: FieldReader) -> tuple[EventStart, ...]:
    # named="event": one run per event and workflow, so a second entry of a name could
    # never start anything
    return named_entries(top, "on_event", what="event subscription", named="event",
                         limit=MAX_SUBSCRIPTIONS, read=_subscription)


def _subscription(reader: FieldReader) -> EventStart | None:
    reader.check_known(_FIELDS, "an event subscription")
    name = reader.text("name", required=True, max_len=128, pattern=_NAME, rule=_NAME_RULE)
    run_input = reader.mapping("input") or {}
    ok = True
    for where, text in _strings(run_input, reader.path("input")):
        try:
            parse(text)
        except InvalidInput as exc:
            reader.problems.append(Problem(where, str(exc)))
            ok = False
    if name is None or not ok:
        return None
    return EventStart(name, dict(run_input))


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from _strings(child, child_path(path, str(key)))
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            yield from _strings(child, child_path(path, index))


def parse(template: str) -> list[str | EventRef]:
    """The template's text and references, in order; InvalidInput on a malformed one."""
    # an unterminated "${" is shown by its first 60 characters, with no "..." (as before
    # the tokenizer was shared with engine.definitions.templates, which adds one)
    return tokenize(template, _reference, show=lambda tail: tail[:60])


def _reference(written: str, _start: int) -> EventRef:
    expr = written[2:-1]
    match = _REF.fullmatch(expr)
    if match is None:
        root = expr.split(".", 1)[0]
        if root != "event":
            raise InvalidInput(written, f"unknown template root {root!r}: an on_event input "
                                        f"is rendered from the event alone; use {_FORMS}")
        raise InvalidInput(written, f"malformed event reference; use {_FORMS}")
    path = tuple(match["path"][1:].split(".")) if match["path"] else ()
    if path and match["field"] != "data":
        raise InvalidInput(written, f"event.{match['field']} is a string and has no fields; "
                                    f"use {_FORMS}")
    return EventRef(written, match["field"], path)


def render_input(template: Any, *, event_id: str, name: str, key: str, data: Any) -> Any:
    """The run input for one event; InvalidInput naming the reference when the event's
    data lacks a path the template reads."""
    fields = {"id": event_id, "name": name, "key": key, "data": data}
    if isinstance(template, str):
        parts = parse(template)
        if len(parts) == 1 and isinstance(parts[0], EventRef):
            return copy.deepcopy(_lookup(parts[0], fields))
        return "".join(part if isinstance(part, str) else _as_text(_lookup(part, fields))
                       for part in parts)
    if isinstance(template, Mapping):
        return {k: render_input(v, event_id=event_id, name=name, key=key, data=data)
                for k, v in template.items()}
    if isinstance(template, list | tuple):
        return [render_input(v, event_id=event_id, name=name, key=key, data=data)
                for v in template]
    return template


def _lookup(ref: EventRef, fields: Mapping[str, Any]) -> Any:
    value = fields[ref.field]
    trail = f"event.{ref.field}"
    for segment in ref.path:
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            raise InvalidInput(ref.text, f"{trail} has no {segment!r} "
                                         f"(it is {describe(value)})")
        trail = f"{trail}.{segment}"
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
