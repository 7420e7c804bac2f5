"""Canonical JSON refuses, by path, the values it has no form for."""

from __future__ import annotations

from typing import Any

import pytest

from engine.core.canonical import canonical_json, require_storable, sha256_hex
from engine.core.errors import InvalidInput


@pytest.mark.parametrize(("value", "field", "message"), [
    ({"input": {"x": float("nan")}}, "input.x", "NaN is not a JSON number"),
    ({"input": {"x": [1, float("inf")]}}, "input.x[1]", "Infinity is not a JSON number"),
    ({"input": {"x": -float("inf")}}, "input.x", "-Infinity is not a JSON number"),
    ({"name": "a\ud800"}, "name", "contains a lone surrogate (U+D800)"),
    ({"k": {"\udfff": 1}}, "k.\\udfff", "the key contains a lone surrogate (U+DFFF)"),
    ([{"a": float("nan")}], "[0].a", "NaN is not a JSON number"),
    (float("nan"), "value", "NaN is not a JSON number"),
])
def test_a_value_without_canonical_json_is_invalid_input_naming_its_path(
        value: Any, field: str, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        sha256_hex(value)
    assert raised.value.field == field
    assert message in str(raised.value)


def test_canonical_json_is_sorted_and_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"é","b":[1,2.5]}'
    assert sha256_hex({"a": 1}) == sha256_hex({"a": 1})


def test_require_storable_names_the_field_and_the_path_inside_it() -> None:
    require_storable({"fine": [1, "two", None, True, 3.5]}, "input")
    for value, field in (({"x": "a\x00b"}, "input.x"), ([float("nan")], "input[0]"),
                         ("\ud800", "input")):
        with pytest.raises(InvalidInput) as raised:
            require_storable(value, "input")
        assert raised.value.field == field
