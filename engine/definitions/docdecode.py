"""Untrusted definition text (YAML or JSON) to plain JSON-like values.

YAML is read event by event from the parser (libyaml when available) and built here,
not by PyYAML's composer and constructor, so that:

* anchors and aliases are refused at the first one seen: an alias bomb never expands;
* only the YAML 1.2 core schema is understood: ``yes``/``on`` and ``2024-01-01`` stay
  strings, and tags such as ``!!python/object`` or ``!!binary`` are refused;
* a repeated mapping key is an error instead of silently overwriting the first one.

JSON goes through ``json.loads`` with duplicate keys refused. Either way, a value jsonb
cannot hold (NaN, ±Infinity or ``.nan``/``.inf``, ``1e400``, a huge integer, a lone
surrogate, U+0000) is refused by its path (``engine.core.canonical.unstorable``). Every
failure is an InvalidDefinition with one Problem, located by line and column or path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, NoReturn

import yaml
from yaml import events

from engine.core.canonical import DECODE_HOOKS, unstorable
from engine.core.errors import InvalidDefinition, Problem

# Self-protection only (the document is built iteratively); definitions enforce their own,
# much smaller nesting limit with a precise path.
MAX_DECODE_DEPTH = 100

_JSON_TYPES = frozenset({"application/json"})
_YAML_TYPES = frozenset({"application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml"})

_CORE = "tag:yaml.org,2002:"
_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
         "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
_SCALAR_TAGS = frozenset(f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null"))
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def child_path(parent: str, key: object) -> str:
    """``steps`` + ``a`` -> ``steps.a``; ``depends_on`` + 0 -> ``depends_on[0]``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def decode(source: str | bytes, media_type: str | None, *, limit: int | None = None,
           what: str = "the document") -> Any:
    """Decode ``source``; ``media_type`` None means JSON if it starts with '{', else YAML.

    With ``limit``, a source over that many bytes is refused before any decoding.
    """
    if limit is not None:
        # a str longer than the limit is over it in bytes too; only shorter ones are encoded
        if isinstance(source, bytes) or len(source) > limit:
            size = len(source)
        else:
            size = len(source.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise _fail("", f"{what} is {size} bytes; the limit is {limit} bytes")
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _fail("", f"not valid UTF-8 (byte {exc.start})") from exc
    else:
        text = source
    kind = (media_type or "").split(";", 1)[0].strip().lower()
    if kind in _JSON_TYPES or (not kind and text.lstrip().startswith("{")):
        document = _decode_json(text)
    elif kind in _YAML_TYPES or not kind:
        document = _decode_yaml(text)
    else:
        raise _fail("", f"unsupported media type {media_type!r}; "
                        "use application/json or application/yaml")
    found = unstorable(document)
    if found is not None:
        raise _fail(*found)
    return document


def _fail(path: str, message: str) -> InvalidDefinition:
    return InvalidDefinition([Problem(path, message)])


def _decode_json(text: str) -> Any:
    try:
        raw = json.loads(text, object_pairs_hook=_Pairs, **DECODE_HOOKS)
    except json.JSONDecodeError as exc:
        raise _fail("", f"invalid JSON at line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg}") from exc
    except RecursionError as exc:
        raise _fail("", "invalid JSON: nested too deeply") from exc
    return _objects(raw, "", 0)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its raw key/value pairs, so duplicates survive to be reported."""


def _objects(value: Any, path: str, depth: int) -> Any:
    if not isinstance(value, list):
        return value
    if depth >= MAX_DECODE_DEPTH:
        raise _fail(path, f"nested more than {MAX_DECODE_DEPTH} levels deep")
    if not isinstance(value, _Pairs):
        return [_objects(item, child_path(path, index), depth + 1)
                for index, item in enumerate(value)]
    result: dict[str, Any] = {}
    for key, item in value:
        if key in result:
            raise _fail(child_path(path, key), f"duplicate key {key!r}")
        result[key] = _objects(item, child_path(path, key), depth + 1)
    return result


class _Frame:
    """A collection under construction; a mapping alternates between key and value."""

    __slots__ = ("container", "key", "want_key")

    def __init__(self, container: list[Any] | dict[Any, Any]) -> None:
        self.container = container
        self.key: Any = None
        self.want_key = True


def _decode_yaml(text: str) -> Any:
    stack: list[_Frame] = []
    try:
        return _build(yaml.parse(text, Loader=_LOADER), stack)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # a bad quoted scalar (an escape such as "\ud800" that names no character) is
        # located by the key it is the value of: the stack is where the parser stopped
        in_scalar = "quoted scalar" in (exc.context or "")
        raise _fail(_stack_path(stack) if in_scalar else "",
                    f"invalid YAML{where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise _fail("", f"invalid YAML: {exc}") from exc


def _build(stream: Iterator[events.Event], stack: list[_Frame]) -> Any:
    root: Any = None
    documents = 0
    for event in stream:
        if isinstance(event, events.DocumentStartEvent):
            documents += 1
            if documents > 1:
                _refuse(event, stack, "a definition must be a single YAML document")
            continue
        if isinstance(event, events.AliasEvent) or getattr(event, "anchor", None):
            _refuse(event, stack, "YAML anchors and aliases are not allowed")
        if isinstance(event, events.CollectionStartEvent):
            _open(event, stack)
            continue
        if isinstance(event, events.CollectionEndEvent):
            value = stack.pop().container
        elif isinstance(event, events.ScalarEvent):
            value = _scalar(event, stack)
        else:  # stream and document boundaries
            continue
        if stack:
            _place(event, stack, value)
        else:
            root = value
    return root


def _open(event: events.CollectionStartEvent, stack: list[_Frame]) -> None:
    mapping = isinstance(event, events.MappingStartEvent)
    expected = f"{_CORE}map" if mapping else f"{_CORE}seq"
    if event.tag not in (None, "!", expected):
        _refuse(event, stack, f"YAML tag {event.tag!r} is not allowed here")
    if stack and isinstance(stack[-1].container, dict) and stack[-1].want_key:
        _refuse(event, stack, "mapping keys must be plain values, not collections")
    if len(stack) >= MAX_DECODE_DEPTH:
        _refuse(event, stack, f"nested more than {MAX_DECODE_DEPTH} levels deep")
    stack.append(_Frame({} if mapping else []))


def _place(event: events.Event, stack: list[_Frame], value: Any) -> None:
    top = stack[-1]
    if isinstance(top.container, list):
        top.container.append(value)
    elif top.want_key:
        if value in top.container:
            _refuse(event, stack, f"duplicate key {value!r}", key=value)
        top.key, top.want_key = value, False
    else:
        top.container[top.key] = value
        top.want_key = True


def _scalar(event: events.ScalarEvent, stack: list[_Frame]) -> Any:
    value, tag = event.value, event.tag
    if tag in (None, "!"):
        # Only plain (unquoted, untagged) scalars are resolved to null/bool/number.
        return _resolve_plain(value, event, stack) if event.implicit[0] else value
    if tag not in _SCALAR_TAGS:
        _refuse(event, stack, f"YAML tag {tag!r} is not allowed; only the core schema "
                              "(!!str, !!int, !!float, !!bool, !!null, !!seq, !!map)")
    if tag == f"{_CORE}str":
        return value
    resolved = _resolve_plain(value, event, stack)
    wanted = tag.rsplit(":", 1)[1]
    ok = {"null": resolved is None, "bool": isinstance(resolved, bool),
          "int": isinstance(resolved, int) and not isinstance(resolved, bool),
          "float": isinstance(resolved, int | float) and not isinstance(resolved, bool)}
    if not ok[wanted]:
        _refuse(event, stack, f"{value!r} is not a valid !!{wanted}")
    return float(resolved) if wanted == "float" else resolved


def _resolve_plain(value: str, event: events.Event, stack: list[_Frame]) -> Any:
    if _NULL.fullmatch(value):
        return None
    if value in _BOOL:
        return _BOOL[value]
    try:
        if _INT.fullmatch(value):
            return int(value, 10)
        if _OCT.fullmatch(value):
            return int(value[2:], 8)
        if _HEX.fullmatch(value):
            return int(value[2:], 16)
    except ValueError:  # beyond Python's integer digit limit
        _refuse(event, stack, f"integer {value[:20]}... is too large")
    if _FLOAT.fullmatch(value):
        return float(value)
    if _INF.fullmatch(value):
        return float("-inf") if value.startswith("-") else float("inf")
    if _NAN.fullmatch(value):
        return float("nan")
    return value


def _stack_path(stack: list[_Frame]) -> str:
    path = ""
    for frame in stack:
        if isinstance(frame.container, list):
            path = child_path(path, len(frame.container))
        elif not frame.want_key:
            path = child_path(path, frame.key)
    return path


def _refuse(event: events.Event, stack: list[_Frame], message: str,
            *, key: object = None) -> NoReturn:
    path = _stack_path(stack)
    if key is not None:
        path = child_path(path, key)
    mark = event.start_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    raise _fail(path, message + where)
