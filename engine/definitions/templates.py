"""``${...}`` references in step inputs, parsed by one grammar and resolved without eval.

Two roots exist: ``${input}`` / ``${input.a.b}`` (the run's input) and
``${steps.<id>.output}`` / ``${steps.<id>.output.a.0}`` (a finished step's output).
Inside a for_each step (docs/workflows.md#for_each), ``${item}`` / ``${item.a}`` is the
list element of the attempt and ``${item_index}`` its position.
Path segments are ``[A-Za-z0-9_-]+``; a numeric segment also indexes a list. ``$${``
is a literal ``${`` (engine.definitions.tokens splits a template; this module parses
what is between the braces). ``engine.definitions.model`` validates templates with
:func:`parse_references` at store time; :func:`render` resolves them at dispatch.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import InvalidInput
from engine.definitions.tokens import tokenize

# Step ids may contain dots, so the id is matched lazily up to the first ".output" that
# is followed only by a path. Bounded quantifiers keep the backtracking linear.
_STEP_REF = re.compile(
    r"steps\.(?P<step>[A-Za-z0-9][A-Za-z0-9._-]{0,63}?)\.output(?P<path>(?:\.[A-Za-z0-9_-]+)*)"
)
_INPUT_REF = re.compile(r"input(?P<path>(?:\.[A-Za-z0-9_-]+)*)")
_ITEM_REF = re.compile(r"item(?P<path>(?:\.[A-Za-z0-9_-]+)*)")
ITEM_ROOTS = ("item", "item_index")
_FORMS = "${input}, ${input.<path>}, ${steps.<id>.output} or ${steps.<id>.output.<path>}"
_MAX_SHOWN = 60


@dataclass(frozen=True)
class Reference:
    """One ``${...}`` occurrence; ``step`` is None for ``${input...}``."""

    text: str
    step: str | None
    path: tuple[str, ...]
    start: int
    end: int
    root: str = ""  # "item" or "item_index" for the for_each forms; "" otherwise

    @property
    def base(self) -> str:
        """The root the path starts from, as it appears in messages."""
        if self.root:
            return self.root
        return "input" if self.step is None else f"steps.{self.step}.output"


def parse_references(template: str) -> list[Reference]:
    """Every reference in ``template``, in order; raises InvalidInput on a malformed one."""
    return [part for part in _tokenize(template) if isinstance(part, Reference)]


@dataclass(frozen=True)
class Item:
    """The for_each element an attempt renders its input for."""

    value: Any
    index: int


def render(template: Any, *, run_input: Any, step_outputs: Mapping[str, Any],
           item: Item | None = None) -> Any:
    """Resolve every reference inside ``template`` (dicts and lists are walked).

    A string that is exactly one reference becomes the referenced value with its JSON
    type; references embedded in text are substituted as text (compact JSON for
    non-strings). Raises InvalidInput naming the reference when a path is missing.
    """
    if isinstance(template, str):
        return _render_string(template, run_input, step_outputs, item)
    if isinstance(template, Mapping):
        return {key: render(value, run_input=run_input, step_outputs=step_outputs, item=item)
                for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [render(value, run_input=run_input, step_outputs=step_outputs, item=item)
                for value in template]
    return template


def _render_string(template: str, run_input: Any, step_outputs: Mapping[str, Any],
                   item: Item | None) -> Any:
    parts = _tokenize(template)
    if len(parts) == 1 and isinstance(parts[0], Reference):
        # A copy, so a consumer mutating its input cannot alter a stored output.
        return copy.deepcopy(_lookup(parts[0], run_input, step_outputs, item))
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
        else:
            pieces.append(_as_text(part, _lookup(part, run_input, step_outputs, item)))
    return "".join(pieces)


def _tokenize(template: str) -> list[str | Reference]:
    return tokenize(template, _parse_expression, show=_shorten)


def _parse_expression(written: str, start: int) -> Reference:
    end = start + len(written)
    expr = written[2:-1]
    if match := _INPUT_REF.fullmatch(expr):
        return Reference(written, None, _segments(match["path"]), start, end)
    if expr == "item_index":
        return Reference(written, None, (), start, end, "item_index")
    if match := _ITEM_REF.fullmatch(expr):
        return Reference(written, None, _segments(match["path"]), start, end, "item")
    if match := _STEP_REF.fullmatch(expr):
        return Reference(written, match["step"], _segments(match["path"]), start, end)
    raise InvalidInput(_shorten(written), _diagnose(expr))


def _segments(path: str) -> tuple[str, ...]:
    return tuple(path[1:].split(".")) if path else ()


def _diagnose(expr: str) -> str:
    if not expr.strip():
        return f"empty reference; use {_FORMS}"
    root = expr.split(".", 1)[0]
    if root == "input":
        return ("malformed path: segments are letters, digits, '_' or '-', "
                f"separated by '.'; use {_FORMS}")
    if root == "steps":
        return f"malformed step reference; use {_FORMS}"
    if root in ITEM_ROOTS:
        return "malformed item reference; use ${item}, ${item.<path>} or ${item_index}"
    return f"unknown root {root!r}; use {_FORMS}"


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _lookup(ref: Reference, run_input: Any, step_outputs: Mapping[str, Any],
            item: Item | None) -> Any:
    if ref.root:
        if item is None:
            raise InvalidInput(ref.text, f"${{{ref.root}}} is only set in a for_each step")
        if ref.root == "item_index":
            return item.index
        value = item.value
    elif ref.step is None:
        value = run_input
    elif ref.step in step_outputs:
        value = step_outputs[ref.step]
    else:
        raise InvalidInput(ref.text, f"step {ref.step!r} has no output (it has not succeeded)")
    trail = ref.base
    for segment in ref.path:
        value = _descend(value, segment, ref, trail)
        trail = f"{trail}.{segment}"
    return value


def _descend(value: Any, segment: str, ref: Reference, trail: str) -> Any:
    if isinstance(value, Mapping):
        if segment in value:
            return value[segment]
        keys = sorted(str(key) for key in value)
        shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
        raise InvalidInput(ref.text, f"{trail} has no key {segment!r} "
                                     f"(keys: {shown or 'none, it is empty'})")
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if segment.isdigit() and int(segment) < len(value):
            return value[int(segment)]
        raise InvalidInput(ref.text, f"{trail} is a list of {len(value)} items; "
                                     f"{segment!r} is not an index in it")
    raise InvalidInput(ref.text, f"{trail} is {kind_of(value)}, which has no field {segment!r}")


def kind_of(value: Any) -> str:
    """A JSON value's kind, for messages: null, a boolean, a number, a string, a list,
    an object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return "an object"


def _as_text(ref: Reference, value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(ref.text, f"value is not JSON ({exc})") from exc
