"""The ``when:`` condition language (docs/workflows.md#conditions): parsed, never eval'd.

A tokenizer and a recursive-descent parser build a small tree; `evaluate` walks it over
a run's input and its steps' outputs and statuses. Pure Python, no I/O.

Grammar (lowest precedence first)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") operand)?
    operand    := literal | reference | "(" expr ")"
    literal    := number | 'string' | "string" | true | false | null
                | "[" (literal ("," literal)*)? "]"
    reference  := input(.seg)* | steps.<id>.output(.seg)* | steps.<id>.status

Semantics, decided so that no evaluation depends on Python's own coercions:

- A path that is missing (no such key, an index past a list's end, a field of a scalar,
  a step that did not succeed) reads as ``null``. It is not an error.
- ``==`` and ``!=`` compare JSON values structurally; numbers compare by value (1 == 1.0),
  but a boolean is never a number and nothing is coerced ("1" != 1). ``null == null``.
- ``< <= > >=`` need two numbers or two strings (strings compare by code point). Any
  other pair, ``null`` included, is an evaluation error.
- ``a in b``: b a list — a equals one of its items; b a string — a is a string contained
  in it; b a mapping — a is a string key of it. Any other b (``null`` included) is an
  evaluation error.
- ``and``, ``or`` and ``not`` take booleans only and short-circuit left to right; the
  whole expression must come to a boolean. Anything else is an evaluation error.

An evaluation error fails the step (``ConditionError``) rather than guessing a result.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

MAX_LENGTH = 2000
MAX_NESTING = 32
MAX_NUMBER_CHARS = 40
MAX_SHOWN_BYTES = 200
MAX_LIST_ITEMS = 100

_STEP_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}?"
_SEG = r"[A-Za-z0-9_-]+"
_REF = re.compile(
    rf"input(?P<ipath>(?:\.{_SEG})*)"
    rf"|steps\.(?P<step>{_STEP_ID})\.(?:output(?P<opath>(?:\.{_SEG})*)|(?P<status>status))")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}
_FORMS = "input.<path>, steps.<id>.output.<path> or steps.<id>.status"


class ExpressionError(ValueError):
    """A syntax error, at ``column`` (1-based) of the expression."""

    def __init__(self, column: int, message: str) -> None:
        self.column = column
        self.message = message
        super().__init__(f"column {column}: {message}")


class EvaluationError(ValueError):
    """The expression is well-formed but cannot be decided on these values."""

    def __init__(self, column: int, message: str) -> None:
        self.column = column
        self.message = message
        super().__init__(f"column {column}: {message}")


# ------------------------------------------------------------------- the tree

@dataclass(frozen=True)
class Literal:
    value: Any
    column: int


@dataclass(frozen=True)
class Ref:
    text: str
    step: str | None  # None: the run input
    path: tuple[str, ...]
    status: bool  # steps.<id>.status
    column: int


@dataclass(frozen=True)
class Not:
    operand: Node
    column: int


@dataclass(frozen=True)
class Logic:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]  # flat, so a long chain costs no recursion depth
    column: int


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node
    column: int


Node = Literal | Ref | Not | Logic | Compare


# ------------------------------------------------------------------- tokens

@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "(", ")", "word", "ref", "number", "string", "end"
    text: str
    column: int
    value: Any = None


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        ch = source[pos]
        column = pos + 1
        if ch in " \t\r\n":
            pos += 1
        elif ch in "()[],":
            tokens.append(_Token(ch, ch, column))
            pos += 1
        elif op := next((o for o in _OPERATORS if source.startswith(o, pos)), None):
            tokens.append(_Token("op", op, column))
            pos += len(op)
        elif ch == "=":
            raise ExpressionError(column, "'=' is not an operator; compare with '=='")
        elif ch == "!":
            raise ExpressionError(column, "'!' is not an operator; write 'not' or '!='")
        elif ch in "'\"":
            text, pos = _string(source, pos)
            tokens.append(_Token("string", source[column - 1:pos], column, text))
        elif ch.isdigit() or (ch == "-" and source[pos + 1:pos + 2].isdigit()):
            tokens.append(_number(source, pos))
            pos += len(tokens[-1].text)
        elif match := _WORD.match(source, pos):
            word = match.group()
            pos = match.end()
            if word in _KEYWORDS:
                tokens.append(_Token("word", word, column))
            else:
                tokens.append(_reference(word, column))
        else:
            raise ExpressionError(column, f"unexpected character {ch!r}")
    tokens.append(_Token("end", "", len(source) + 1))
    return tokens


def _string(source: str, start: int) -> tuple[str, int]:
    quote = source[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(source):
        ch = source[pos]
        if ch == quote:
            return "".join(out), pos + 1
        if ch == "\\":
            escaped = source[pos + 1:pos + 2]
            if escaped not in _ESCAPES:
                raise ExpressionError(pos + 1, f"unknown escape '\\{escaped}' (allowed: "
                                               "\\\\ \\' \\\" \\n \\t)")
            out.append(_ESCAPES[escaped])
            pos += 2
        else:
            out.append(ch)
            pos += 1
    raise ExpressionError(start + 1, f"unterminated string (no closing {quote})")


def _number(source: str, pos: int) -> _Token:
    match = _NUMBER.match(source, pos)
    if match is None:
        raise ExpressionError(pos + 1, "malformed number")
    text = match.group()
    end = match.end()
    if end < len(source) and (source[end].isalnum() or source[end] in "._"):
        raise ExpressionError(pos + 1, f"malformed number {source[pos:end + 1]!r}")
    if len(text) > MAX_NUMBER_CHARS:
        raise ExpressionError(pos + 1, f"number of {len(text)} characters; the limit is "
                                       f"{MAX_NUMBER_CHARS}")
    if re.fullmatch(r"-?[0-9]+", text):
        return _Token("number", text, pos + 1, int(text))
    value = float(text)
    if not math.isfinite(value):
        raise ExpressionError(pos + 1, f"number {text} is out of range")
    return _Token("number", text, pos + 1, value)


def _reference(word: str, column: int) -> _Token:
    match = _REF.fullmatch(word)
    if match is None:
        root = word.split(".", 1)[0]
        if root in ("input", "steps"):
            raise ExpressionError(column, f"malformed reference {word!r}; use {_FORMS}")
        raise ExpressionError(column, f"unknown name {root!r}; use {_FORMS}, a literal "
                                      "(number, 'string', true, false, null) or "
                                      "and/or/not/in")
    if match["step"] is None:
        path = match["ipath"]
        ref = Ref(word, None, tuple(path[1:].split(".")) if path else (), False, column)
    else:
        path = match["opath"] or ""
        ref = Ref(word, match["step"], tuple(path[1:].split(".")) if path else (),
                  match["status"] is not None, column)
    return _Token("ref", word, column, ref)


# ------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    @property
    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def is_word(self, word: str) -> bool:
        return self.peek.kind == "word" and self.peek.text == word

    def nest(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ExpressionError(column, f"nested more than {MAX_NESTING} levels deep")

    def expression(self) -> Node:
        first = self.peek.column
        nodes = [self.conjunction()]
        while self.is_word("or"):
            self.take()
            nodes.append(self.conjunction())
        return nodes[0] if len(nodes) == 1 else Logic("or", tuple(nodes), first)

    def conjunction(self) -> Node:
        first = self.peek.column
        nodes = [self.negation()]
        while self.is_word("and"):
            self.take()
            nodes.append(self.negation())
        return nodes[0] if len(nodes) == 1 else Logic("and", tuple(nodes), first)

    def negation(self) -> Node:
        if self.is_word("not"):
            column = self.take().column
            self.nest(column)
            node: Node = Not(self.negation(), column)
            self.depth -= 1
            return node
        return self.comparison()

    def comparison(self) -> Node:
        left = self.operand()
        token = self.peek
        if token.kind == "op" or (token.kind == "word" and token.text == "in"):
            self.take()
            right = self.operand()
            follow = self.peek
            if follow.kind == "op" or (follow.kind == "word" and follow.text == "in"):
                raise ExpressionError(follow.column, f"comparisons do not chain: put "
                                                     f"parentheses around one side of "
                                                     f"{follow.text!r}")
            return Compare(token.text, left, right, token.column)
        return left

    def operand(self) -> Node:
        token = self.take()
        if token.kind == "(":
            self.nest(token.column)
            node = self.expression()
            closing = self.take()
            if closing.kind != ")":
                raise ExpressionError(closing.column, _expected("')'", closing)
                                      + f" to close '(' at column {token.column}")
            self.depth -= 1
            return node
        if token.kind == "[":
            return Literal(self.list_items(token), token.column)
        if token.kind in ("number", "string"):
            return Literal(token.value, token.column)
        if token.kind == "ref":
            assert isinstance(token.value, Ref)
            return token.value
        if token.kind == "word" and token.text in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[token.text],
                           token.column)
        raise ExpressionError(token.column, _expected("a value", token))


    def list_items(self, opening: _Token) -> list[Any]:
        """A list literal's items: literals only, so a list costs no evaluation."""
        items: list[Any] = []
        if self.peek.kind == "]":
            self.take()
            return items
        while True:
            if len(items) >= MAX_LIST_ITEMS:
                raise ExpressionError(self.peek.column, f"a list literal holds at most "
                                                        f"{MAX_LIST_ITEMS} items")
            token = self.take()
            if token.kind in ("number", "string"):
                items.append(token.value)
            elif token.kind == "word" and token.text in ("true", "false", "null"):
                items.append({"true": True, "false": False, "null": None}[token.text])
            else:
                raise ExpressionError(token.column, _expected("a literal list item", token))
            separator = self.take()
            if separator.kind == "]":
                return items
            if separator.kind != ",":
                raise ExpressionError(separator.column, _expected("',' or ']'", separator)
                                      + f" in the list opened at column {opening.column}")


def _expected(what: str, token: _Token) -> str:
    found = "the end of the expression" if token.kind == "end" else repr(token.text)
    return f"expected {what}, found {found}"


@lru_cache(maxsize=1024)
def parse(source: str) -> Node:
    """The tree of ``source``; ExpressionError names the column of the first problem."""
    if not source.strip():
        raise ExpressionError(1, "empty expression")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(MAX_LENGTH + 1, f"expression of {len(source)} characters; "
                                              f"the limit is {MAX_LENGTH}")
    parser = _Parser(_tokenize(source))
    node = parser.expression()
    rest = parser.peek
    if rest.kind != "end":
        raise ExpressionError(rest.column, _expected("an operator or the end", rest))
    return node


def references(node: Node) -> list[Ref]:
    """Every reference in the tree, left to right."""
    if isinstance(node, Ref):
        return [node]
    if isinstance(node, Not):
        return references(node.operand)
    if isinstance(node, Logic):
        return [ref for operand in node.operands for ref in references(operand)]
    if isinstance(node, Compare):
        return references(node.left) + references(node.right)
    return []


# ------------------------------------------------------------------- evaluation

@dataclass
class Context:
    """What a condition may read: the run input, succeeded steps' outputs, every
    dependency's status."""

    run_input: Any
    outputs: Mapping[str, Any]
    statuses: Mapping[str, str]
    read: dict[str, Any] = field(default_factory=dict)


def evaluate(source: str, ctx: Context) -> bool:
    """The condition's value; ``ctx.read`` gets every reference read and its value (as
    the timeline shows it). Raises EvaluationError (or ExpressionError for text that
    was never validated)."""
    value = _eval(parse(source), ctx)
    if not isinstance(value, bool):
        raise EvaluationError(1, f"the condition came to {_kind(value)}, not a boolean "
                                 "(compare it, e.g. '== true')")
    return value


def _eval(node: Node, ctx: Context) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Ref):
        value = _resolve(node, ctx)
        ctx.read[node.text] = shown(value)
        return value
    if isinstance(node, Not):
        return not _boolean(_eval(node.operand, ctx), "not", node.column)
    if isinstance(node, Logic):
        stop = node.op == "or"  # the value that decides the chain at once
        for operand in node.operands:
            if _boolean(_eval(operand, ctx), node.op, operand_column(operand)) is stop:
                return stop
        return not stop
    return _compare(node.op, _eval(node.left, ctx), _eval(node.right, ctx), node.column)


def operand_column(node: Node) -> int:
    """Where an operand starts, for messages about it."""
    if isinstance(node, Compare):
        return operand_column(node.left)
    if isinstance(node, Logic):
        return operand_column(node.operands[0])
    return node.column


def _resolve(ref: Ref, ctx: Context) -> Any:
    if ref.step is None:
        value = ctx.run_input
    elif ref.status:
        return ctx.statuses.get(ref.step)
    else:
        value = ctx.outputs.get(ref.step)
    for segment in ref.path:
        if isinstance(value, Mapping):
            value = value.get(segment)
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            value = value[int(segment)] if segment.isdigit() and int(segment) < len(value) \
                else None
        else:
            return None
    return value


def _boolean(value: Any, op: str, column: int) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(column, f"{op!r} needs booleans, got {_kind(value)}")
    return value


def _compare(op: str, left: Any, right: Any, column: int) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op == "in":
        return _contains(left, right, column)
    if (_is_number(left) and _is_number(right)) or \
            (isinstance(left, str) and isinstance(right, str)):
        if op == "<":
            return bool(left < right)
        if op == "<=":
            return bool(left <= right)
        return bool(left > right) if op == ">" else bool(left >= right)
    raise EvaluationError(column, f"{op!r} compares two numbers or two strings, not "
                                  f"{_kind(left)} and {_kind(right)}")


def _contains(item: Any, container: Any, column: int) -> bool:
    if isinstance(container, list | tuple):
        return any(_equal(item, member) for member in container)
    if isinstance(container, str | Mapping):
        if not isinstance(item, str):
            raise EvaluationError(column, f"'in' {_kind(container)} needs a string on the "
                                          f"left, got {_kind(item)}")
        return item in container
    raise EvaluationError(column, f"'in' needs a list, a string or a mapping on the right, "
                                  f"got {_kind(container)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right) and not (
            (isinstance(left, Mapping) and isinstance(right, Mapping))
            or (isinstance(left, list | tuple) and isinstance(right, list | tuple))):
        return False
    if isinstance(left, Mapping):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(_equal(a, b)
                                                for a, b in zip(left, right, strict=True))
    return bool(left == right)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if _is_number(value):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string" if len(value) > 40 else f"a string ({value!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def shown(value: Any) -> Any:
    """A read value as the timeline records it: itself when small, else a preview."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)[:MAX_SHOWN_BYTES]
    if len(text.encode()) <= MAX_SHOWN_BYTES:
        return value
    return {"truncated": text[:MAX_SHOWN_BYTES], "bytes": len(text.encode())}
