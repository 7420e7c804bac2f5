"""The one ``${...}`` tokenizer (engine.definitions.tokens) and its two users: step
inputs (engine.definitions.templates, roots ``input``/``steps``/``item``) and on_event
inputs (engine.definitions.eventstarts, root ``event``). The outer syntax must behave
the same in both, and each keeps the messages it gave before the tokenizer was shared
(they reach API problem bodies)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.core.errors import InvalidDefinition, InvalidInput
from engine.definitions import eventstarts, templates
from engine.definitions.model import parse_workflow
from engine.definitions.tokens import tokenize

FORMS = "${input}, ${input.<path>}, ${steps.<id>.output} or ${steps.<id>.output.<path>}"
EVENT_FORMS = ("${event.id}, ${event.name}, ${event.key}, ${event.data} or "
               "${event.data.<path>}")
UNTERMINATED = "unterminated '${' (no closing '}')"


def _spans(template: str) -> list[str | tuple[str, int]]:
    """The tokenizer with a reference parser that keeps what it was given."""
    return tokenize(template, lambda written, start: (written, start), show=lambda t: t)


@pytest.mark.parametrize(("template", "parts"), [
    ("", []),
    ("plain", ["plain"]),
    ("a lone $ and } and $$ and { stay", ["a lone $ and } and $$ and { stay"]),
    ("${a}", [("${a}", 0)]),
    ("x ${a} y", ["x ", ("${a}", 2), " y"]),
    ("${a}${b}", [("${a}", 0), ("${b}", 4)]),
    ("${a} ${b}", [("${a}", 0), " ", ("${b}", 5)]),
    ("$${a}", ["${a}"]),
    ("$${a}$${b}", ["${a}${b}"]),
    ("x $${a} ${b} y", ["x ${a} ", ("${b}", 8), " y"]),
    ("$$${a}", ["$${a}"]),
    ("${$${a}", [("${$${a}", 0)]),
    ("${a${b}}", [("${a${b}", 0), "}"]),
    ("${}", [("${}", 0)]),
    ("$${", ["${"]),
])
def test_the_tokenizer_splits_text_and_references(
        template: str, parts: list[str | tuple[str, int]]) -> None:
    assert _spans(template) == parts


def test_four_dollars_are_a_dollar_and_an_escape() -> None:
    # "$$$${a}": the search finds "$${" at 2, so "$$" is text, then the escape
    assert _spans("$$$${a}") == ["$$${a}"]


@pytest.mark.parametrize(("template", "tail"), [
    ("${", "${"),
    ("${a", "${a"),
    ("x ${a} y ${b", "${b"),
    ("$${a} ${b", "${b"),
    ("${a ${b", "${a ${b"),
])
def test_an_unterminated_reference_is_refused_showing_its_tail(template: str,
                                                               tail: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        tokenize(template, lambda written, start: written, show=lambda t: f"<{t}>")
    assert caught.value.field == f"<{tail}>"
    assert str(caught.value) == f"<{tail}>: {UNTERMINATED}"


def test_references_are_parsed_left_to_right_before_a_later_unterminated_one() -> None:
    def refuse(written: str, start: int) -> str:
        raise InvalidInput(written, f"refused at {start}")

    with pytest.raises(InvalidInput, match=r"^\$\{bad\}: refused at 2$"):
        tokenize("x ${bad} ${open", refuse, show=lambda t: t)


# Both users of the tokenizer: (name, parse, a valid reference, another valid one).
Parse = Callable[[str], list[Any]]
USERS = [
    pytest.param(templates._tokenize, "${input.a}", "${steps.s.output.b}", id="templates"),
    pytest.param(eventstarts.parse, "${event.data.a}", "${event.key}", id="eventstarts"),
]


def _text(parts: list[Any]) -> list[str]:
    """Each part as written: text as it is, a reference by its ``${...}``."""
    return [part if isinstance(part, str) else part.text for part in parts]


@pytest.mark.parametrize(("parse", "one", "two"), USERS)
def test_both_users_split_the_same_way(parse: Parse, one: str, two: str) -> None:
    assert parse("") == []
    assert parse("no references") == ["no references"]
    assert _text(parse(one)) == [one]
    assert _text(parse(f"a {one} b {two} c")) == ["a ", one, " b ", two, " c"]
    assert _text(parse(f"{one}{two}")) == [one, two]
    assert _text(parse(f"{one} {two}")) == [one, " ", two]
    escaped_one, escaped_two = "$" + one, "$" + two  # "$${...}"
    assert parse(escaped_one) == [one]  # text, not a reference
    assert _text(parse(f"{escaped_one} {two}")) == [f"{one} ", two]
    assert parse(escaped_one + escaped_two) == [one + two]
    assert parse("$" + escaped_one) == ["$" + one]


@pytest.mark.parametrize(("parse", "one", "two"), USERS)
def test_both_users_refuse_an_unterminated_reference_alike(parse: Parse, one: str,
                                                           two: str) -> None:
    for template, tail in [("${", "${"), (f"{one} then {two[:-1]}", two[:-1]),
                           ("$" + one + " ${x", "${x")]:
        with pytest.raises(InvalidInput) as caught:
            parse(template)
        assert caught.value.field == tail
        assert str(caught.value) == f"{tail}: {UNTERMINATED}"


def test_a_long_unterminated_reference_is_cut_short_as_each_module_did() -> None:
    tail = "${input." + "a" * 80
    with pytest.raises(InvalidInput) as step:
        templates.parse_references(f"x {tail}")
    assert step.value.field == tail[:60] + "..."
    with pytest.raises(InvalidInput) as event:
        eventstarts.parse(f"x {tail}")
    assert event.value.field == tail[:60]  # no "..." here


def test_the_first_malformed_reference_is_reported_in_both() -> None:
    with pytest.raises(InvalidInput) as step:
        templates.parse_references("${env.HOME} ${input")
    assert str(step.value) == f"${{env.HOME}}: unknown root 'env'; use {FORMS}"
    with pytest.raises(InvalidInput) as event:
        eventstarts.parse("${env.HOME} ${event")
    assert str(event.value) == ("${env.HOME}: unknown template root 'env': an on_event "
                                f"input is rendered from the event alone; use {EVENT_FORMS}")


@pytest.mark.parametrize(("template", "message"), [
    ("${event.id}", f"${{event.id}}: unknown root 'event'; use {FORMS}"),
    ("a ${event.data.x} b", f"${{event.data.x}}: unknown root 'event'; use {FORMS}"),
])
def test_a_step_input_refuses_the_event_root(template: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        templates.parse_references(template)
    assert str(caught.value) == message
    with pytest.raises(InvalidInput) as rendered:
        templates.render({"x": template}, run_input={}, step_outputs={})
    assert str(rendered.value) == message


@pytest.mark.parametrize(("template", "message"), [
    ("${input.y}", "${input.y}: unknown template root 'input': an on_event input is "
                   f"rendered from the event alone; use {EVENT_FORMS}"),
    ("a ${steps.s.output} b", "${steps.s.output}: unknown template root 'steps': an "
                              "on_event input is rendered from the event alone; use "
                              f"{EVENT_FORMS}"),
    ("${event.key.z}", f"${{event.key.z}}: event.key is a string and has no fields; "
                       f"use {EVENT_FORMS}"),
    ("${event.data..z}", f"${{event.data..z}}: malformed event reference; use {EVENT_FORMS}"),
])
def test_an_event_input_refuses_other_roots(template: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        eventstarts.parse(template)
    assert str(caught.value) == message
    with pytest.raises(InvalidInput) as rendered:
        eventstarts.render_input({"x": [template]}, event_id="e", name="n", key="k",
                                 data={"z": 1})
    assert str(rendered.value) == message


def _refused(source: str) -> list[str]:
    with pytest.raises(InvalidDefinition) as caught:
        parse_workflow(source)
    return [str(problem) for problem in caught.value.problems]


HEAD = "id: w\nname: w\nversion: 1.0.0\n"


@pytest.mark.parametrize(("template", "problem"), [
    ("'${event.id}'", f"steps.a.input.x: ${{event.id}}: unknown root 'event'; use {FORMS}"),
    ("'x ${input.a'", f"steps.a.input.x: ${{input.a: {UNTERMINATED}"),
])
def test_a_stored_step_input_is_refused_as_before(template: str, problem: str) -> None:
    assert _refused(f"{HEAD}steps:\n  a: {{type: job, topic: t, input: {{x: {template}}}}}\n"
                    ) == [problem]


@pytest.mark.parametrize(("template", "problem"), [
    ("'${input.y}'", "on_event[0].input.x: ${input.y}: unknown template root 'input': an "
                     "on_event input is rendered from the event alone; use " + EVENT_FORMS),
    ("'x ${event.data'", f"on_event[0].input.x: ${{event.data: {UNTERMINATED}"),
])
def test_a_stored_on_event_input_is_refused_as_before(template: str, problem: str) -> None:
    source = (f"{HEAD}on_event: [{{name: a.b, input: {{x: {template}}}}}]\n"
              "steps:\n  a: {type: job, topic: t}\n")
    assert _refused(source) == [problem]


def test_both_render_escapes_adjacent_references_and_text_alike() -> None:
    step = templates.render(
        {"s": "${input.a}${input.b}", "t": "<$${input.a}> ${input.a}!", "n": "${input.b}"},
        run_input={"a": "A", "b": 2}, step_outputs={})
    event = eventstarts.render_input(
        {"s": "${event.key}${event.data.b}", "t": "<$${event.key}> ${event.key}!",
         "n": "${event.data.b}"},
        event_id="e", name="n", key="A", data={"b": 2})
    assert step == {"s": "A2", "t": "<${input.a}> A!", "n": 2}
    assert event == {"s": "A2", "t": "<${event.key}> A!", "n": 2}
