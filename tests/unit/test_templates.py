from __future__ import annotations

from typing import Any

import pytest

from engine.core.errors import InvalidInput
from engine.definitions.templates import Reference, parse_references, render

RUN_INPUT: dict[str, Any] = {
    "n": 5,
    "name": "db-1",
    "flag": True,
    "nothing": None,
    "host": {"name": "db-1", "port": 5432},
    "items": ["a", "b", "c"],
    "by_index": {"0": "zero"},
}
OUTPUTS: dict[str, Any] = {
    "detect": {"severity": "high", "hosts": [{"id": "h1"}, {"id": "h2"}]},
    "fetch.v2": {"x": 1},
    "count": 3,
}


def _render(template: Any) -> Any:
    return render(template, run_input=RUN_INPUT, step_outputs=OUTPUTS)


@pytest.mark.parametrize(("template", "expected"), [
    ("${input}", RUN_INPUT),
    ("${input.n}", 5),
    ("${input.flag}", True),
    ("${input.nothing}", None),
    ("${input.host}", {"name": "db-1", "port": 5432}),
    ("${input.items}", ["a", "b", "c"]),
    ("${input.items.1}", "b"),
    ("${input.by_index.0}", "zero"),
    ("${steps.detect.output}", OUTPUTS["detect"]),
    ("${steps.detect.output.hosts.1.id}", "h2"),
    ("${steps.count.output}", 3),
    ("${steps.fetch.v2.output.x}", 1),
])
def test_a_lone_reference_keeps_the_json_type(template: str, expected: Any) -> None:
    result = _render(template)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("template", "expected"), [
    ("n=${input.n}", "n=5"),
    ("host ${input.name}:${input.host.port}", "host db-1:5432"),
    ("cfg ${input.host}", 'cfg {"name":"db-1","port":5432}'),
    ("${input.items} ", '["a","b","c"] '),
    ("flag=${input.flag}, none=${input.nothing}", "flag=true, none=null"),
    ("sev: ${steps.detect.output.severity}!", "sev: high!"),
    ("${input.n}${input.n}", "55"),
    ("no references at all", "no references at all"),
    ("", ""),
    ("a lone $ and } and $$ stay", "a lone $ and } and $$ stay"),
])
def test_references_inside_text_are_substituted_as_text(template: str, expected: str) -> None:
    assert _render(template) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ("$${input.n}", "${input.n}"),
    ("price: $${x} for ${input.name}", "price: ${x} for db-1"),
    ("$$${input.n}", "$${input.n}"),
])
def test_double_dollar_escapes_a_literal_reference(template: str, expected: str) -> None:
    assert _render(template) == expected


def test_nested_structures_are_walked_and_other_values_kept() -> None:
    template = {
        "host": "${input.host.name}",
        "ports": ["${input.host.port}", 22, {"label": "p-${input.n}"}],
        "severity": "${steps.detect.output.severity}",
        "dry_run": False,
        "ratio": 0.5,
        "missing": None,
    }
    assert _render(template) == {
        "host": "db-1",
        "ports": [5432, 22, {"label": "p-5"}],
        "severity": "high",
        "dry_run": False,
        "ratio": 0.5,
        "missing": None,
    }
    assert template["host"] == "${input.host.name}"


def test_a_substituted_value_is_a_copy_of_the_stored_output() -> None:
    result = _render("${steps.detect.output}")
    result["hosts"].append({"id": "h3"})
    assert len(OUTPUTS["detect"]["hosts"]) == 2


@pytest.mark.parametrize(("template", "field", "message"), [
    ("${input.host.user}", "${input.host.user}",
     "input.host has no key 'user' (keys: name, port)"),
    ("${input.items.3}", "${input.items.3}",
     "input.items is a list of 3 items; '3' is not an index in it"),
    ("${input.items.first}", "${input.items.first}",
     "input.items is a list of 3 items; 'first' is not an index in it"),
    ("${input.n.digits}", "${input.n.digits}", "input.n is a number, which has no field 'digits'"),
    ("${input.nothing.x}", "${input.nothing.x}", "input.nothing is null, which has no field 'x'"),
    ("x ${steps.apply.output}", "${steps.apply.output}",
     "step 'apply' has no output (it has not succeeded)"),
    ("${steps.detect.output.hosts.0.name}", "${steps.detect.output.hosts.0.name}",
     "steps.detect.output.hosts.0 has no key 'name' (keys: id)"),
])
def test_a_missing_path_names_the_reference_and_where_it_stops(
        template: str, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        _render({"deep": [template]})
    assert caught.value.field == field
    assert str(caught.value) == f"{field}: {message}"


def test_parse_references_reports_each_reference_with_its_span() -> None:
    text = "a ${input.x.0} b $${input.no} ${steps.s.1.output} ${steps.s.output.output}"
    refs = parse_references(text)
    assert refs == [
        Reference("${input.x.0}", None, ("x", "0"), 2, 14),
        Reference("${steps.s.1.output}", "s.1", (), 30, 49),
        Reference("${steps.s.output.output}", "s", ("output",), 50, 74),
    ]
    assert [text[r.start:r.end] for r in refs] == [r.text for r in refs]
    assert parse_references("plain") == []


@pytest.mark.parametrize(("template", "field", "fragment"), [
    ("${input", "${input", "unterminated '${' (no closing '}')"),
    ("ok ${input.a} then ${steps.a.output", "${steps.a.output", "unterminated"),
    ("${}", "${}", "empty reference"),
    ("${ input }", "${ input }", "unknown root ' input '"),
    ("${env.HOME}", "${env.HOME}", "unknown root 'env'; use ${input}"),
    ("${input..a}", "${input..a}", "malformed path"),
    ("${input.a b}", "${input.a b}", "malformed path"),
    ("${steps.a}", "${steps.a}", "malformed step reference"),
    ("${steps.a.result}", "${steps.a.result}", "malformed step reference"),
    ("${steps..output}", "${steps..output}", "malformed step reference"),
    ("${a${input}}", "${a${input}", "unknown root 'a${input'"),
])
def test_malformed_references_are_refused(template: str, field: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_references(template)
    assert caught.value.field == field
    assert fragment in str(caught.value)


def test_render_refuses_a_malformed_template_too() -> None:
    with pytest.raises(InvalidInput, match="unknown root 'env'"):
        _render({"x": "${env.HOME}"})
