"""The one tokenizer for ``${...}`` templates (docs/workflows.md), shared by the step
inputs of engine.definitions.templates and the ``on_event`` inputs of
engine.definitions.eventstarts (docs/workflows.md#event-started-runs).

It knows only the outer syntax: ``${`` opens a reference that the first ``}`` closes,
``$${`` is a literal ``${``, and an ``${`` with no ``}`` after it is an error. What may
stand between the braces (``${input.*}`` and ``${steps.<id>.output.*}`` for a step,
``${event.*}`` for an event start) is the caller's: it passes a function that parses one
reference or raises InvalidInput naming it. Pure Python, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from engine.core.errors import InvalidInput

R = TypeVar("R")

# "${" or "$${"; in "$$${" the first "$" is text and "$${" the escape
_OPEN = re.compile(r"\$?\$\{")
UNTERMINATED = "unterminated '${' (no closing '}')"


def tokenize(template: str, reference: Callable[[str, int], R], *,
             show: Callable[[str], str]) -> list[str | R]:
    """The template's text and references, in order.

    ``reference(written, start)`` parses one reference, ``written`` being it with its
    ``${`` and ``}`` and ``start`` its offset in ``template``. Adjacent text (escapes
    included) is merged into one string, and there are no empty strings. An unterminated
    ``${`` raises InvalidInput whose field is ``show`` applied to the template from that
    ``${`` to its end (each caller keeps its own way of cutting a long one short).
    References are parsed left to right, so a malformed one before an unterminated
    ``${`` is the one reported.
    """
    if "${" not in template:  # the common case at dispatch: nothing to look at
        return [template] if template else []
    parts: list[str | R] = []
    text: list[str] = []
    pos = 0
    while (match := _OPEN.search(template, pos)) is not None:
        text.append(template[pos:match.start()])
        if match.group() == "$${":
            text.append("${")
            pos = match.end()
            continue
        close = template.find("}", match.end())
        if close < 0:
            raise InvalidInput(show(template[match.start():]), UNTERMINATED)
        if before := "".join(text):
            parts.append(before)
        text = []
        parts.append(reference(template[match.start():close + 1], match.start()))
        pos = close + 1
    text.append(template[pos:])
    if rest := "".join(text):
        parts.append(rest)
    return parts
