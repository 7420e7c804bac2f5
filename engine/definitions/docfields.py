"""Reading fields of a decoded document while collecting problems instead of raising.

Validation reports every problem at once (docs/workflows.md), so readers here never raise: a
bad field records a Problem at its dotted path and reads as None.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, TypeVar

from engine.core.errors import Problem
from engine.definitions.docdecode import child_path

_SHOWN = 40


def describe(value: Any) -> str:
    """A value as a message shows it: ``'5' (a string)``, ``true (a boolean)``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
        return f"{shown!r} (a string)"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def check_values(value: Any, path: str, *, max_depth: int, problems: list[Problem]) -> None:
    """Report nesting deeper than ``max_depth`` and anything that has no JSON form.

    The document is stored as JSON, and an already-decoded document (from an API body
    or a Python caller) may hold what YAML or JSON text could not.
    """
    _walk(value, path, 1, max_depth, problems)


def _walk(value: Any, path: str, level: int, max_depth: int, problems: list[Problem]) -> None:
    if isinstance(value, Mapping | list | tuple):
        if level > max_depth:
            problems.append(Problem(path, f"nested more than {max_depth} levels deep"))
            return
        if isinstance(value, Mapping):
            for key, child in value.items():
                if isinstance(key, str):
                    _walk(child, child_path(path, key), level + 1, max_depth, problems)
                else:
                    problems.append(Problem(path, f"keys must be strings, got {describe(key)}"))
        else:
            for index, child in enumerate(value):
                _walk(child, child_path(path, index), level + 1, max_depth, problems)
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(Problem(path, f"must be a finite number, got {value!r}"))
    elif value is not None and not isinstance(value, str | int | float):
        problems.append(Problem(path, f"{describe(value)} is not a JSON value"))


class FieldReader:
    """The fields of one mapping; each read records its own problems and returns None."""

    def __init__(self, raw: Mapping[Any, Any], path: str, problems: list[Problem]) -> None:
        self.raw = raw
        self.base = path
        self.problems = problems

    def path(self, key: str) -> str:
        return child_path(self.base, key)

    def get(self, key: str) -> Any:
        """The raw value; an explicit null reads as absent, like a missing field."""
        return self.raw.get(key)

    def problem(self, key: str | None, message: str) -> None:
        self.problems.append(Problem(self.base if key is None else self.path(key), message))

    def check_known(self, allowed: Collection[str], what: str) -> None:
        listed = ", ".join(allowed)
        for key in self.raw:
            # Keys that are not strings were already reported by check_values.
            if isinstance(key, str) and key not in allowed:
                self.problem(key, f"unknown field {key!r} in {what} (allowed: {listed})")

    def text(self, key: str, *, required: bool = False, max_len: int = 256,
             pattern: re.Pattern[str] | None = None, rule: str = "") -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                self.problem(key, f"missing required field {key!r}")
            return None
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {describe(value)}")
        elif not value:
            self.problem(key, "must not be empty")
        elif len(value) > max_len:
            self.problem(key, f"is {len(value)} characters long; the limit is {max_len}")
        elif pattern is not None and not pattern.fullmatch(value):
            self.problem(key, f"{value!r} is not {rule}")
        else:
            return value
        return None

    def integer(self, key: str, *, lo: int, hi: int) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, f"must be an integer, got {describe(value)}")
        elif not lo <= value <= hi:
            self.problem(key, f"must be between {lo} and {hi}, got {value}")
        else:
            return value
        return None

    def number(self, key: str, *, lo: float, hi: float) -> float | None:
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"must be a number, got {describe(value)}")
        elif not lo <= value <= hi:  # also false for NaN
            self.problem(key, f"must be between {lo} and {hi}, got {value}")
        else:
            return float(value)
        return None

    def mapping(self, key: str, *, required: bool = False) -> Mapping[Any, Any] | None:
        value = self.get(key)
        if value is None:
            if required:
                self.problem(key, f"missing required field {key!r}")
            return None
        if not isinstance(value, Mapping):
            self.problem(key, f"must be a mapping, got {describe(value)}")
            return None
        return value

    def nested(self, key: str, what: str, allowed: Collection[str]) -> FieldReader | None:
        """A reader over the mapping at ``key``, its unknown fields already reported."""
        value = self.mapping(key)
        if value is None:
            return None
        reader = FieldReader(value, self.path(key), self.problems)
        reader.check_known(allowed, what)
        return reader

    def strings(self, key: str, *, max_len: int = 256) -> tuple[str, ...]:
        """A list of non-empty strings; bad items are reported at their index."""
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            self.problem(key, f"must be a list of strings, got {describe(value)}")
            return ()
        items: list[str] = []
        for index, item in enumerate(value):
            where = child_path(self.path(key), index)
            if not isinstance(item, str) or not item:
                self.problems.append(Problem(where, f"must be a non-empty string, "
                                                    f"got {describe(item)}"))
            elif len(item) > max_len:
                self.problems.append(Problem(where, f"is longer than {max_len} characters"))
            else:
                items.append(item)
        return tuple(items)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def named_entries(top: FieldReader, field: str, *, what: str, named: str, limit: int,
                  read: Callable[[FieldReader], N | None]) -> tuple[N, ...]:
    """A workflow-level list of mappings each with a unique ``name`` (``schedules``,
    ``on_event``): each entry read by ``read`` at its own path; problems recorded on
    ``top`` naming the entry (not a list, too many, not a mapping, a repeated name)."""
    raw = top.get(field)
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        top.problem(field, f"must be a list of {what}s, got {describe(raw)}")
        return ()
    if len(raw) > limit:
        top.problem(field, f"{len(raw)} {what}s; the limit is {limit}")
        return ()
    found: list[N] = []
    names: set[str] = set()
    for index, body in enumerate(raw):
        path = child_path(top.path(field), index)
        if not isinstance(body, Mapping):
            top.problems.append(Problem(path, f"a {what} must be a mapping, "
                                              f"got {describe(body)}"))
            continue
        entry = read(FieldReader(body, path, top.problems))
        if entry is None:
            continue
        if entry.name in names:
            # the name keys the entry (a schedule's ticks, an event's one run per workflow)
            top.problems.append(Problem(child_path(path, "name"),
                                        f"duplicate {named} name {entry.name!r}"))
            continue
        names.add(entry.name)
        found.append(entry)
    return tuple(found)
