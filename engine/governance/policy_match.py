"""A policy rule's ``match``: read from a document, then compiled once into checks.

Evaluation is on the hot path of both gates, so nothing is parsed or translated per
call. A compiled match is two tuples of ``(slot, test)`` pairs; the rule matches when
every test returns something truthy for the fact its slot picks.

* ``static`` looks at what identifies a step — tenant, workflow, step, topic, risk tags,
  capability (``STATIC_SLOTS``) — which is the same on every evaluation of that step,
  so ``engine.governance.policy`` runs these once per distinct step and caches which rules survive.
* ``dynamic`` looks at labels and the input (``SLOT_LABELS``, ``SLOT_INPUT``), per call.

Tests are bound C methods wherever possible (``re.Pattern.match`` for globs,
``frozenset.__contains__`` for plain names, ``operator.le`` for label subsets), so a
rule costs a few C calls rather than Python frames.

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

from engine.core.canonical import canonical_json
from engine.core.errors import InvalidDefinition, Problem
from engine.definitions.docdecode import child_path, decode
from engine.definitions.docfields import FieldReader, describe

# Positions in the fact tuples engine.governance.policy.Bundle.evaluate builds: the static key ...
STATIC_SLOTS = ("tenant_id", "workflow_id", "step_id", "topic", "risk_tags", "capability")
SLOT_TENANT, SLOT_WORKFLOW, SLOT_STEP, SLOT_TOPIC, SLOT_RISK_TAGS, SLOT_CAPABILITY = range(6)
# ... and the per-call values.
SLOT_LABELS, SLOT_INPUT = 0, 1

Test = Callable[[Any], object]
Check = tuple[int, Test]

MAX_GLOB_LEN = 256
MAX_COMPARISON_LEN = 1024
MATCH_FIELDS = ("topics", "workflows", "steps", "tenants", "risk_tags", "capability",
                "labels", "input")
_NAME_LISTS = MATCH_FIELDS[:6]  # the keys that hold lists of names or globs
_GLOB_KEYS = (("topics", SLOT_TOPIC), ("workflows", SLOT_WORKFLOW), ("steps", SLOT_STEP),
              ("tenants", SLOT_TENANT))
_MAGIC = re.compile(r"[*?\[]")
_PATH = re.compile(r"\s*input((?:\.[A-Za-z0-9_-]+)+)")
_OPERATOR = re.compile(r"\s*(==|!=|>=|<=|>|<)|\s+(in|contains|exists)(?![A-Za-z0-9_-])")
_OPERATORS = "==, !=, >, >=, <, <=, in, contains, exists"
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_MISSING: Final = object()
# Input is decoded JSON, so values have exactly these classes; testing the class is
# faster than isinstance and keeps bool (a subclass of int) from passing as a number.
_NUMERIC = frozenset({int, float})
_SEQUENCES = frozenset({list, tuple})
_CONTAINERS = frozenset({list, tuple, dict})


# ------------------------------------------------------------------ JSON values

def _is_number(value: Any) -> bool:
    return value.__class__ in _NUMERIC


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: a boolean never equals a number (Python says True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a.__class__ in _NUMERIC:
        return b.__class__ in _NUMERIC and bool(a == b)
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
    if literal.__class__ in _NUMERIC:
        return lambda v: v.__class__ in _NUMERIC and v == literal
    return functools.partial(json_equal, literal)


def _member_of(items: list[Any]) -> Callable[[Any], bool]:
    """``v in items`` in JSON terms; scalars are hashed once, here."""
    strings = frozenset(i for i in items if i.__class__ is str)
    numbers = frozenset(i for i in items if i.__class__ in _NUMERIC)
    if len(strings) == len(items):  # the usual ["gold", "platinum"]: one frame, one lookup
        return lambda v: v.__class__ is str and v in strings
    flags = frozenset(i for i in items if i.__class__ is bool)
    has_null = any(i is None for i in items)
    others = tuple(i for i in items if i.__class__ in _CONTAINERS)

    def member(v: Any) -> bool:
        kind = v.__class__
        if kind is str:
            return v in strings
        if kind in _NUMERIC:
            return v in numbers  # frozenset lookup: 1 finds 1.0, True is kept apart
        if kind is bool:
            return v in flags
        if v is None:
            return has_null
        return any(json_equal(v, other) for other in others)
    return member


def _contains(literal: Any) -> Callable[[Any], bool]:
    if literal.__class__ is str:
        # list.__contains__ uses ==, and a str equals only a str.
        return lambda v: v.__class__ in _SEQUENCES and literal in v
    equals = _equals(literal)
    return lambda v: v.__class__ in _SEQUENCES and any(map(equals, v))


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
        return lambda v: v.__class__ is str and compare(v, literal)
    return lambda v: v.__class__ in _NUMERIC and compare(v, literal)


def _resolver(path: tuple[str, ...], present: Callable[[Any], bool]) -> Test:
    """A test on ``facts.input``: walks ``path``, then applies ``present`` to the value.

    Paths of one or two keys (``input.amount``, ``input.customer.tier``) get loop-free
    versions: they are nearly all of them, and this runs once per comparison per call.
    """
    if len(path) <= 2 and not any(key.isdigit() for key in path):
        first, second = path[0], path[-1]
        if len(path) == 1:
            def test_one(value: Any) -> bool:
                if value.__class__ is dict or isinstance(value, Mapping):  # dict: no ABC check
                    found = value.get(first, _MISSING)
                    return found is not _MISSING and present(found)
                return False
            return test_one

        def test_two(value: Any) -> bool:
            if value.__class__ is dict or isinstance(value, Mapping):
                value = value.get(first, _MISSING)
                if value.__class__ is dict or isinstance(value, Mapping):
                    found = value.get(second, _MISSING)
                    return found is not _MISSING and present(found)
            return False  # _MISSING is not a mapping either
        return test_two
    steps = tuple((key, int(key) if key.isdigit() else None) for key in path)

    def test(value: Any) -> bool:
        for key, index in steps:
            if value.__class__ is dict or isinstance(value, Mapping):
                value = value.get(key, _MISSING)
                if value is _MISSING:
                    return False
            elif index is not None and value.__class__ in _SEQUENCES and index < len(value):
                value = value[index]
            else:
                return False
        return present(value)
    return test


@dataclass(frozen=True)
class Comparison:
    """One parsed ``input`` comparison; ``text`` is its normalised spelling."""

    path: tuple[str, ...] = field(compare=False)
    op: str = field(compare=False)
    # Compared through ``text``: as Python values true == 1 == 1.0, as JSON they differ.
    literal: Any = field(compare=False)
    text: str = field(init=False)
    test: Test = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        left = "input." + ".".join(self.path)
        text = f"{left} exists" if self.op == "exists" else \
            f"{left} {self.op} {canonical_json(self.literal)}"
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "test", _resolver(self.path, _predicate(self.op, self.literal)))


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
    """One test for "any pattern matches", as cheap as the patterns allow.

    Plain names are a set lookup and ``prefix*`` patterns one ``str.startswith`` (both
    C calls that allocate nothing, unlike a regex match object); anything else is a
    single regex, which also costs far more to compile.
    """
    patterns = tuple(patterns)
    if not any(_MAGIC.search(p) for p in patterns):
        return frozenset(patterns).__contains__
    if all(p.endswith("*") and not _MAGIC.search(p, 0, len(p) - 1) for p in patterns):
        return operator.methodcaller("startswith", tuple(p[:-1] for p in patterns))
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
    static: tuple[Check, ...] = field(init=False, repr=False, compare=False)
    dynamic: tuple[Check, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Globs first: a rule usually fails on its topic.
        static: list[Check] = [(slot, compile_globs(getattr(self, key)))
                               for key, slot in _GLOB_KEYS if getattr(self, key)]
        if self.capability:
            static.append((SLOT_CAPABILITY, frozenset(self.capability).__contains__))
        if self.risk_tags:
            # An empty intersection is falsy: no tag in common, no match.
            static.append((SLOT_RISK_TAGS, frozenset(self.risk_tags).intersection))
        dynamic: list[Check] = []
        if self.labels:
            # wanted <= dict_items falls through to dict_items >= wanted: a C subset
            # test that builds no set per call.
            wanted = frozenset(self.labels.items())
            dynamic.append((SLOT_LABELS, functools.partial(operator.le, wanted)))
        dynamic.extend((SLOT_INPUT, c.test) for c in self.input)
        object.__setattr__(self, "static", tuple(static))
        object.__setattr__(self, "dynamic", tuple(dynamic))

    def to_doc(self) -> dict[str, Any]:
        """Only the keys that constrain something; lists sorted (their order means nothing)."""
        doc: dict[str, Any] = {key: list(getattr(self, key)) for key in _NAME_LISTS
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
