"""The control-flow fields of a step (docs/workflows.md#control-flow): ``when``,
``trigger``, and the fields of ``sleep`` and ``wait_event`` steps.

Kept apart from engine/definitions/model.py, which calls `read` for every step and
`check_conditions` once the graph is known, and writes `to_doc` into the canonical form.
Only non-default values enter the canonical document, so definitions stored before these
fields existed keep their digest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.core.enums import StepType, Trigger
from engine.core.errors import InvalidInput, Problem
from engine.definitions import expressions, stepgraph
from engine.definitions.docfields import FieldReader, describe
from engine.definitions.templates import Reference, parse_references

if TYPE_CHECKING:
    from engine.definitions.model import StepDef

STEP_FIELDS = ("when", "trigger", "duration_ms", "until", "event", "key")
# fields model.py reads for another type that a flow step type also has
ALSO_FOR = {"timeout_ms": (StepType.WAIT_EVENT,)}
MAX_SLEEP_MS = 366 * 24 * 3600 * 1000
_EVENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_EVENT_RULE = "a valid event name (letters, digits, '.', '_', ':', '-'; starting with a " \
              "letter or digit; at most 128 characters)"
_TRIGGERS = ", ".join(t.value for t in Trigger)
_ONLY_FOR = {"duration_ms": StepType.SLEEP, "until": StepType.SLEEP,
             "event": StepType.WAIT_EVENT, "key": StepType.WAIT_EVENT}


@dataclass(frozen=True)
class Condition:
    step: str
    path: str
    source: str
    refs: tuple[expressions.Ref, ...]


def read(sid: str, fields: FieldReader, step_type: StepType | None,
         refs: list[tuple[str, str, Reference]], conditions: list[Condition]) -> dict[str, Any]:
    """The StepDef keyword arguments of the flow fields; problems go to ``fields``."""
    out: dict[str, Any] = {}
    when = fields.text("when", max_len=expressions.MAX_LENGTH)
    if when is not None:
        try:
            tree = expressions.parse(when)
        except expressions.ExpressionError as exc:
            fields.problem("when", f"column {exc.column}: {exc.message}")
        else:
            out["when"] = when
            conditions.append(Condition(sid, fields.path("when"), when,
                                        tuple(expressions.references(tree))))
    raw_trigger = fields.get("trigger")
    if raw_trigger is not None:
        try:
            out["trigger"] = Trigger(raw_trigger)
        except ValueError:
            fields.problem("trigger", f"unknown trigger {describe(raw_trigger)} "
                                      f"(allowed: {_TRIGGERS})")
    for key, only in _ONLY_FOR.items():
        if step_type is not None and step_type is not only and fields.get(key) is not None:
            fields.problem(key, f"{key!r} is only allowed on {only.value} steps; "
                                f"this is a step of type {step_type.value!r}")
    if step_type is StepType.SLEEP:
        out.update(_sleep(sid, fields, refs))
    elif step_type is StepType.WAIT_EVENT:
        out.update(_wait(sid, fields, refs))
    return out


def _sleep(sid: str, fields: FieldReader, refs: list[tuple[str, str, Reference]]
           ) -> dict[str, Any]:
    duration = fields.integer("duration_ms", lo=0, hi=MAX_SLEEP_MS)
    until = fields.text("until", max_len=512)
    given = [k for k in ("duration_ms", "until") if fields.get(k) is not None]
    if len(given) != 1:
        fields.problem(None, "a sleep step needs exactly one of 'duration_ms' or 'until'"
                       + (", not both" if given else ""))
    if until is not None and _template(sid, fields, "until", until, refs) is None:
        try:
            parse_instant(until)
        except InvalidInput as exc:
            fields.problem("until", str(exc).split(": ", 1)[1])
    return {"duration_ms": duration, "until": until}


def _wait(sid: str, fields: FieldReader, refs: list[tuple[str, str, Reference]]
          ) -> dict[str, Any]:
    event = fields.text("event", required=True, max_len=128, pattern=_EVENT, rule=_EVENT_RULE)
    key = fields.text("key", required=True, max_len=512)
    if key is not None:
        _template(sid, fields, "key", key, refs)
    return {"event": event, "key": key}


def _template(sid: str, fields: FieldReader, name: str, text: str,
              refs: list[tuple[str, str, Reference]]) -> list[Reference] | None:
    """The references of a template field (checked later for ancestry); None if it has
    none, so the caller can validate it as a literal."""
    try:
        found = parse_references(text)
    except InvalidInput as exc:
        fields.problem(name, str(exc))
        return []
    refs.extend((sid, fields.path(name), ref) for ref in found)
    return found or None


def parse_instant(text: str) -> datetime:
    """An RFC 3339 timestamp with its offset; InvalidInput otherwise."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or "T" not in text.upper():
        raise InvalidInput("until", f"{text[:60]!r} is not an RFC 3339 timestamp with an "
                                    "offset (e.g. 2026-01-31T09:00:00Z)")
    return value


def check_conditions(conditions: list[Condition], graph: dict[str, tuple[str, ...]],
                     problems: list[Problem]) -> None:
    """A condition reads only steps that finish before it is evaluated: its ancestors."""
    for condition in conditions:
        for ref in condition.refs:
            if ref.step is None:
                continue
            if ref.step not in graph:
                message = f"refers to unknown step {ref.step!r}"
            elif ref.step == condition.step:
                message = f"refers to step {ref.step!r} itself"
            elif ref.step not in stepgraph.reachable(graph, condition.step):
                message = (f"refers to step {ref.step!r}, which is not an ancestor of "
                           f"{condition.step!r}")
            else:
                continue
            problems.append(Problem(condition.path,
                                    f"column {ref.column}: {ref.text} {message}"))


def to_doc(step: StepDef) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if step.when is not None:
        doc["when"] = step.when
    if step.trigger is not Trigger.ALL_SUCCEEDED:
        doc["trigger"] = step.trigger.value
    if step.type is StepType.SLEEP:
        doc["duration_ms"] = step.duration_ms
        doc["until"] = step.until
    elif step.type is StepType.WAIT_EVENT:
        doc["event"] = step.event
        doc["key"] = step.key
        doc["timeout_ms"] = step.timeout_ms
    return doc
