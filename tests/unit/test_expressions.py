"""The when: condition language (engine/definitions/expressions.py): syntax, semantics,
and hostile input."""

from __future__ import annotations

from typing import Any

import pytest

from engine.definitions.expressions import (
    MAX_LENGTH,
    MAX_NESTING,
    Context,
    EvaluationError,
    ExpressionError,
    evaluate,
    parse,
    references,
)

INPUT = {"severity": "low", "count": 4, "ratio": 0.5, "tags": ["db", "web"],
         "flags": {"urgent": True}, "nothing": None, "hosts": [{"name": "a"}]}
OUTPUTS = {"classify": {"severity": "high", "score": 7, "labels": {"team": "ops"}},
           "fetch.logs": {"lines": 12}}
STATUSES = {"classify": "succeeded", "fetch.logs": "succeeded", "maybe": "skipped"}


def ev(source: str) -> Any:
    return evaluate(source, Context(INPUT, OUTPUTS, STATUSES))


@pytest.mark.parametrize(("source", "expected"), [
    ("input.severity == 'low'", True),
    ('input.severity == "low"', True),
    ("input.severity != 'low'", False),
    ("input.count > 3", True),
    ("input.count >= 4 and input.count <= 4", True),
    ("input.count < 4", False),
    ("input.ratio == 0.5", True),
    ("input.count == 4.0", True),  # numbers compare by value
    ("input.count == '4'", False),  # but nothing is coerced
    ("input.flags.urgent == true", True),
    ("input.flags.urgent == 1", False),  # a boolean is not a number
    ("input.nothing == null", True),
    ("input.missing == null", True),  # a missing path reads as null
    ("input.missing.deeper.still == null", True),
    ("input.severity.oops == null", True),  # a field of a string: null
    ("input.tags.1 == 'web'", True),  # a numeric segment indexes a list
    ("input.tags.9 == null", True),
    ("input.hosts.0.name == 'a'", True),
    ("'db' in input.tags", True),
    ("'cache' in input.tags", False),
    ("'ow' in input.severity", True),  # substring
    ("'urgent' in input.flags", True),  # key of a mapping
    ("input.count in [1, 2, 4]", True),
    ("input.severity in []", False),
    ("null in [null]", True),
    ("steps.classify.output.severity in ['high', 'critical']", True),
    ("steps.classify.output.labels == steps.classify.output.labels", True),
    ("steps.classify.status == 'succeeded'", True),
    ("steps.maybe.status == 'skipped'", True),
    ("steps.maybe.output == null", True),  # a step that did not succeed has no output
    ("steps.fetch.logs.output.lines == 12", True),  # a step id with a dot
    ("not input.flags.urgent", False),
    ("not not true", True),
    ("true or input.count > 'x'", True),  # short-circuit: the right side is not read
    ("false and input.count > 'x'", False),
    ("(input.count > 3 or false) and not (input.severity == 'high')", True),
    ("'a' < 'b'", True),
    ("'B' < 'a'", True),  # by code point
    ("-1 < 0", True),
    ("1e3 == 1000", True),
    ("'it\\'s' == \"it's\"", True),
    ("'a\\nb' != 'a b'", True),
    ("[1, 'x'] == [1, 'x']", True),
])
def test_semantics(source: str, expected: bool) -> None:
    assert ev(source) is expected


@pytest.mark.parametrize(("source", "message"), [
    ("input.count > 'x'", "two numbers or two strings, not a number (4) and a string ('x')"),
    ("input.missing > 3", "not null and a number (3)"),
    ("true < false", "two numbers or two strings"),
    ("input.count and true", "'and' needs booleans, got a number (4)"),
    ("not input.severity", "'not' needs booleans, got a string ('low')"),
    ("'x' in input.missing", "'in' needs a list, a string or a mapping on the right, got null"),
    ("1 in input.severity", "needs a string on the left"),
    ("input.severity", "came to a string ('low'), not a boolean"),
    ("input.missing", "came to null, not a boolean"),
])
def test_evaluation_errors_name_the_problem(source: str, message: str) -> None:
    with pytest.raises(EvaluationError) as caught:
        ev(source)
    assert message in caught.value.message


def test_reads_record_what_was_read() -> None:
    ctx = Context(INPUT, OUTPUTS, STATUSES)
    assert evaluate("input.severity == 'low' and steps.classify.status == 'succeeded'", ctx)
    assert ctx.read == {"input.severity": "low", "steps.classify.status": "succeeded"}
    ctx = Context({"big": "x" * 1000}, {}, {})
    assert evaluate("input.big != null", ctx)
    assert ctx.read["input.big"]["bytes"] == 1002  # a preview, not the whole value


@pytest.mark.parametrize(("source", "column", "message"), [
    ("", 1, "empty expression"),
    ("   ", 1, "empty expression"),
    ("input.a = 1", 9, "compare with '=='"),
    ("!input.a", 1, "write 'not' or '!='"),
    ("input.a ==", 11, "expected a value, found the end of the expression"),
    ("== 1", 1, "expected a value, found '=='"),
    ("input.a == 1 2", 14, "expected an operator or the end, found '2'"),
    ("(input.a == 1", 14, "expected ')', found the end of the expression to close '(' at "
                          "column 1"),
    ("input.a == 1)", 13, "expected an operator or the end"),
    ("1 < 2 < 3", 7, "comparisons do not chain"),
    ("'abc", 1, "unterminated string"),
    ("'a\\qb'", 3, "unknown escape"),
    ("foo == 1", 1, "unknown name 'foo'"),
    ("input..a == 1", 1, "malformed reference 'input..a'"),
    ("steps.x == 1", 1, "malformed reference 'steps.x'"),
    ("steps.x.outputs.a == 1", 1, "malformed reference"),
    ("input.a == 01", 12, "malformed number"),
    ("input.a == 1.", 12, "malformed number"),
    ("input.a == 1x", 12, "malformed number"),
    ("input.a == 1e999", 12, "out of range"),
    ("input.a == " + "9" * 41, 12, "number of 41 characters; the limit is 40"),
    ("input.a in [1, input.b]", 16, "expected a literal list item"),
    ("input.a in [1 2]", 15, "expected ',' or ']'"),
    ("input.a in [1,", 15, "expected a literal list item, found the end"),
    ("input.a @ 1", 9, "unexpected character '@'"),
    ("and", 1, "expected a value, found 'and'"),
    ("not", 4, "expected a value, found the end"),
    ("input.a == 1 and", 17, "expected a value, found the end"),
    ("input.a == 'x' or or", 19, "expected a value, found 'or'"),
])
def test_syntax_errors_name_the_column(source: str, column: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(source)
    assert caught.value.column == column, caught.value
    assert message in caught.value.message, caught.value


def test_hostile_nesting_is_refused_without_exhausting_the_stack() -> None:
    for depth in (MAX_NESTING + 1, 1000, 100_000):
        opened = "(" * depth + "true" + ")" * depth
        with pytest.raises(ExpressionError) as caught:
            parse(opened[:MAX_LENGTH])
        assert "nested more than" in caught.value.message or "expected" in caught.value.message
        with pytest.raises(ExpressionError):
            parse("not " * depth + "true")
    ok = "(" * MAX_NESTING + "true" + ")" * MAX_NESTING
    assert ev(ok) is True


def test_long_flat_chains_evaluate_without_recursion() -> None:
    chain = " and ".join(["true"] * 220)
    assert len(chain) <= MAX_LENGTH
    assert ev(chain) is True
    assert ev(" or ".join(["false"] * 220)) is False


def test_huge_input_is_refused_before_it_is_read() -> None:
    for hostile in ("1" * 10_000_000, "'" + "a" * 10_000_000 + "'", "input." + "a." * 100_000):
        with pytest.raises(ExpressionError) as caught:
            parse(hostile)
        assert f"the limit is {MAX_LENGTH}" in caught.value.message


def test_big_integers_compare_exactly() -> None:
    big = 10 ** 30
    assert evaluate(f"input.n == {big}", Context({"n": big}, {}, {})) is True
    assert evaluate(f"input.n > {big}", Context({"n": big + 1}, {}, {})) is True


def test_references_lists_every_step_read() -> None:
    tree = parse("steps.a.status == 'x' or (input.b == 1 and steps.c.d.output.e in [1])")
    assert [(r.step, r.path, r.status) for r in references(tree)] == [
        ("a", (), True), (None, ("b",), False), ("c.d", ("e",), False)]
