"""A policy rule's ``match``: read from a document, then compiled once into checks.

Evaluation is on the hot path of both gates, so nothing is parsed or translated per
call. A compiled match is a tuple of ``(slot, test)`` pairs: ``slot`` picks one fact
from the tuple ``engine.policy`` builds once per evaluation (see the ``SLOT_*``
constants) and ``test`` is, wherever possible, a bound C method —
``re.Pattern.match`` for globs, ``frozenset.__contains__`` for plain names — so a
rule costs a few C calls rather than Python frames. The rule matches when every test
returns something truthy.

Input comparisons, ``input.<field>[.<field>...] OP <JSON literal>``:

* OP is one of ``== != > >= < <= in contains exists``; ``exists`` takes no literal,
  ``in`` takes a list.
* A path segment of digits also indexes a list (``input.items.0.sku``), as in templates.
* Values compare as JSON values, not Python ones: ``true`` is not ``1``, ``1`` equals
  ``1.0``, and lists and objects compare element by element.
* A **missing field makes every comparison false**, ``!=`` included: ``input.region !=
  "eu"`` does not match an input without a region. Only ``exists`` tests presence, and a
  field holding null is present.
* A **type mismatch makes the comparison false**: ``> >= < <=`` compare a number with a
  number or a string with a string (by code point) and nothing else — a boolean is not a
  number; ``contains`` needs a list field. ``==`` and ``!=`` are defined between any two
  JSON values: values of different types are simply not equal (``input.n != 5`` holds
  when n is ``"5"``).
"""

from __future__ import annotations

import fnmatch
import functools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from engine.canonical import canonical_json
from engine.docdecode import child_path, decode
from engine.docfields import FieldReader, describe
from engine.errors import InvalidDefinition, Problem

# Positions in the per-evaluation fact tuple built by engine.policy.Bundle.evaluate.
SLOT_TENANT, SLOT_WORKFLOW, SLOT_STEP, SLOT_TOPIC = 0, 1, 2, 3
SLOT_RISK_TAGS, SLOT_CAPABILITY, SLOT_LABELS, SLOT_INPUT = 4, 5, 6, 7

Test = Callable[[Any], object]
Check = tuple[int, Test]

MAX_GLOB_LEN = 256
MAX_COMPARISON_LEN = 1024
MATCH_FIELDS = ("topics", "workflows", "steps", "tenants", "risk_tags", "capability",
                "labels", "input")
_GLOB_KEYS = (("topics", SLOT_TOPIC), ("workflows", SLOT_WORKFLOW), ("steps", SLOT_STEP),
              ("tenants", SLOT_TENANT))
_MAGIC = re.compile(r"[*?\[]")
_PATH = re.compile(r"\s*input((?:\.[A-Za-z0-9_-]+)+)")
_OPERATOR = re.compile(r"\s*(==|!=|>=|<=|>|<)|\s+(in|contains|exists)(?![A-Za-z0-9_-])")
_OPERATORS = "==, !=, >, >=, <, <=, in, contains, exists"
_ORDERING = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_MISSING: Final = object()
_NUMBER = (int, float)


# ------------------------------------------------------------------ JSON values

def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: a boolean never equals a number (Python says True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, _NUMBER):
        return isinstance(b, _NUMBER) and a == b
    if a is None or isinstance(a, str):
        return bool(a == b)  # None and str are equal only to their own kind
    if isinstance(a, Mapping):
        return (isinstance(b, Mapping) and a.keys() == b.keys()
                and all(json_equal(a[key], b[key]) for key in a))
    if isinstance(a, list | tuple):
        return (isinstance(b, list | tuple) and len(a) == len(b)
                and all(map(json_equal, a, b)))
    return False


def _equals(literal: Any) -> Callable[[Any], bool]:
    """``v == literal`` in JSON terms, specialised for the literal's type."""
    if isinstance(literal, bool) or literal is None:
        return functools.partial(operator.is_, literal)
    if isinstance(literal, str):
        return functools.partial(operator.eq, literal)  # a str equals only a str
    if isinstance(literal, _NUMBER):
        return lambda v: _is_number(v) and v == literal
    return functools.partial(json_equal, literal)


def _member_of(items: list[Any]) -> Callable[[Any], bool]:
    """``v in items`` in JSON terms; scalars are hashed once, here."""
    strings = frozenset(i for i in items if isinstance(i, str))
    numbers = frozenset(i for i in items if _is_number(i))
    flags = frozenset(i for i in items if isinstance(i, bool))
    has_null = any(i is None for i in items)
    others = tuple(i for i in items if isinstance(i, list | Mapping))

    def member(v: Any) -> bool:
        if isinstance(v, str):
            return v in strings
        if isinstance(v, bool):
            return v in flags
        if isinstance(v, _NUMBER):
            return v in numbers
        if v is None:
            return has_null
        return any(json_equal(v, other) for other in others)
    return member


def _contains(literal: Any) -> Callable[[Any], bool]:
    if isinstance(literal, str):
        # list.__contains__ uses ==, and a str equals only a str.
        return lambda v: isinstance(v, list | tuple) and literal in v
    equals = _equals(literal)
    return lambda v: isinstance(v, list | tuple) and any(map(equals, v))


def _predicate(op: str, literal: Any) -> Callable[[Any], bool]:
    """The test applied to a field that is present."""
    if op == "exists":
        return lambda v: True
    if op in ("==", "!="):
        equals = _equals(literal)
        return equals if op == "==" else (lambda v: not equals(v))
    if op == "in":
        return _member_of(literal)
    if op == "contains":
        return _contains(literal)
    compare = _ORDERING[op]
    if isinstance(literal, str):
        return lambda v: isinstance(v, str) and compare(v, literal)
    return lambda v: _is_number(v) and compare(v, literal)


def _resolver(path: tuple[str, ...], present: Callable[[Any], bool]) -> Test:
    """A test on ``facts.input``: walks ``path``, then applies ``present`` to the value."""
    steps = tuple((key, int(key) if key.isdigit() else None) for key in path)

    def test(value: Any) -> bool:
        for key, index in steps:
            if type(value) is dict or isinstance(value, Mapping):  # dict: skip the ABC check
                value = value.get(key, _MISSING)
                if value is _MISSING:
                    return False
            elif index is not None and isinstance(value, list | tuple) and index < len(value):
                value = value[index]
            else:
                return False
        return bool(present(value))
    return test


@dataclass(frozen=True)
class Comparison:
    """One parsed ``input`` comparison; ``text`` is its normalised spelling."""

    path: tuple[str, ...]
    op: str
    literal: Any
    test: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", _resolver(self.path, _predicate(self.op, self.literal)))

    @property
    def text(self) -> str:
        left = "input." + ".".join(self.path)
        if self.op == "exists":
            return f"{left} exists"
        return f"{left} {self.op} {canonical_json(self.literal)}"


def parse_comparison(text: str) -> Comparison:
    """Parse ``input.a.b OP literal``; raises ValueError with a message saying what was expected."""
    path_match = _PATH.match(text)
    if path_match is None:
        raise ValueError(f"{text.strip()[:60]!r} must start with a field path such as "
                         "input.amount (segments of letters, digits, '_' or '-' after 'input.')")
    path = tuple(path_match[1][1:].split("."))
    rest = text[path_match.end():]
    op_match = _OPERATOR.match(rest)
    if op_match is None:
        raise ValueError(f"expected an operator ({_OPERATORS}) after "
                         f"'input.{'.'.join(path)}', got {rest.strip()[:40]!r}")
    op = op_match[1] or op_match[2]
    raw = rest[op_match.end():].strip()
    if op == "exists":
        if raw:
            raise ValueError(f"'exists' takes no value, got {raw[:40]!r}")
        return Comparison(path, op, None)
    if not raw:
        raise ValueError(f"{op!r} needs a JSON value after it, e.g. "
                         + ('["gold", "platinum"]' if op == "in" else '1000 or "eu"'))
    try:
        literal = decode(raw, "application/json")
    except InvalidDefinition as exc:
        raise ValueError(f"the value after {op!r} must be JSON (a number, a \"quoted string\", "
                         f"true, false, null or a list): {exc.problems[0].message}") from exc
    if op == "in" and not (isinstance(literal, list) and literal):
        raise ValueError(f"'in' needs a non-empty list, e.g. [\"gold\", \"platinum\"], "
                         f"got {describe(literal)}")
    if op in _ORDERING and not (isinstance(literal, str) or _is_number(literal)):
        raise ValueError(f"{op!r} compares numbers or strings, got {describe(literal)}")
    return Comparison(path, op, literal)


# ------------------------------------------------------------------ globs

def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable glob, or None.

    fnmatch silently reads an unclosed '[' as a literal character; that is almost
    always a typo in a policy, so it is refused instead.
    """
    index, size = 0, len(pattern)
    while index < size:
        if pattern[index] == "[":
            # Same scan as fnmatch.translate: a leading '!' and a leading ']' are literal.
            end = index + 1
            if end < size and pattern[end] == "!":
                end += 1
            if end < size and pattern[end] == "]":
                end += 1
            end = pattern.find("]", end)
            if end < 0:
                return (f"{pattern!r} is not a valid glob: '[' at position {index} is never "
                        "closed (write '[[]' for a literal '[')")
            index = end
        index += 1
    return None


def compile_globs(patterns: Iterable[str]) -> Test:
    """One test for "any pattern matches": a set lookup when none has a wildcard."""
    patterns = tuple(patterns)
    if not any(_MAGIC.search(p) for p in patterns):
        return frozenset(patterns).__contains__
    # translate() ends each alternative with \Z, so one anchored match tests them all.
    return re.compile("|".join(fnmatch.translate(p) for p in patterns)).match


# ------------------------------------------------------------------ the match

@dataclass(frozen=True)
class Match:
    """What a rule looks at; an empty tuple or mapping means "not constrained"."""

    topics: tuple[str, ...] = ()
    workflows: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    risk_tags: tuple[str, ...] = ()
    capability: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    input: tuple[Comparison, ...] = ()
    checks: tuple[Check, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", self._compile())

    def _compile(self) -> tuple[Check, ...]:
        # Cheapest and most selective first: a rule usually fails on its topic.
        checks: list[Check] = [(slot, compile_globs(getattr(self, key)))
                               for key, slot in _GLOB_KEYS if getattr(self, key)]
        if self.capability:
            checks.append((SLOT_CAPABILITY, frozenset(self.capability).__contains__))
        if self.risk_tags:
            # An empty intersection is falsy: no tag in common, no match.
            checks.append((SLOT_RISK_TAGS, frozenset(self.risk_tags).intersection))
        if self.labels:
            wanted = frozenset(self.labels.items())
            # wanted <= dict_items falls through to dict_items >= wanted: a C subset
            # test that builds no set per call.
            checks.append((SLOT_LABELS, functools.partial(operator.le, wanted)))
        checks.extend((SLOT_INPUT, c.test) for c in self.input)
        return tuple(checks)

    def to_doc(self) -> dict[str, Any]:
        """Only the keys that constrain something; lists sorted (their order means nothing)."""
        doc: dict[str, Any] = {key: list(getattr(self, key)) for key in MATCH_FIELDS[:6]
                               if getattr(self, key)}
        if self.labels:
            doc["labels"] = dict(self.labels)
        if self.input:
            doc["input"] = [c.text for c in self.input]
        return doc


# ------------------------------------------------------------------ reading

def read_match(rule: FieldReader) -> Match:
    """The rule's ``match``, its problems recorded in ``rule.problems``."""
    reader = rule.nested("match", "a rule's match", MATCH_FIELDS)
    if reader is None:
        return Match()
    lists = {key: _names(reader, key, glob=True) for key, _ in _GLOB_KEYS}
    lists["risk_tags"] = _names(reader, "risk_tags", glob=False)
    if isinstance(reader.get("capability"), str):
        one = reader.text("capability", max_len=MAX_GLOB_LEN)
        lists["capability"] = (one,) if one else ()
    else:
        lists["capability"] = _names(reader, "capability", glob=False)
    return Match(**lists, labels=MappingProxyType(_labels(reader)),
                 input=_comparisons(reader))


def _names(reader: FieldReader, key: str, *, glob: bool) -> tuple[str, ...]:
    raw = reader.get(key)
    if isinstance(raw, list | tuple) and not raw:
        reader.problem(key, f"must list at least one value; omit {key!r} to match any")
        return ()
    names = reader.strings(key, max_len=MAX_GLOB_LEN)
    if glob:
        for index, name in enumerate(names):
            if (problem := glob_problem(name)) is not None:
                reader.problems.append(Problem(child_path(reader.path(key), index), problem))
    return tuple(sorted(set(names)))


def _labels(reader: FieldReader) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, value in (reader.mapping("labels") or {}).items():
        if not isinstance(key, str):
            continue  # reported by check_values
        where = child_path(reader.path("labels"), key)
        if not key or len(key) > 128:
            reader.problems.append(Problem(where, "label names must be 1 to 128 characters"))
        elif not isinstance(value, str) or len(value) > 1024:
            reader.problems.append(Problem(where, "must be a string of at most 1024 "
                                                  f"characters, got {describe(value)}"))
        else:
            labels[key] = value
    return labels


def _comparisons(reader: FieldReader) -> tuple[Comparison, ...]:
    raw = reader.get("input")
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        reader.problem("input", "must be a list of comparisons such as "
                                f"'input.amount > 1000', got {describe(raw)}")
        return ()
    found: list[Comparison] = []
    for index, item in enumerate(raw):
        where = child_path(reader.path("input"), index)
        if not isinstance(item, str):
            reader.problems.append(Problem(where, "must be a comparison string such as "
                                                  f"'input.amount > 1000', got {describe(item)}"))
        elif len(item) > MAX_COMPARISON_LEN:
            reader.problems.append(Problem(where, f"is longer than {MAX_COMPARISON_LEN} "
                                                  "characters"))
        else:
            try:
                found.append(parse_comparison(item))
            except ValueError as exc:
                reader.problems.append(Problem(where, str(exc)))
    return tuple(found)
