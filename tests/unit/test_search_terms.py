"""How operators' search terms become query values: id prefixes and input filters."""

from __future__ import annotations

from uuid import UUID

import pytest

from engine.core import ids
from engine.core.errors import InvalidInput, NotFound
from engine.runs.lifecycle import input_filter


def test_a_prefix_is_the_range_of_uuids_it_starts() -> None:
    low, high = ids.prefix_range("F20C-58b0", "RUN_ID")
    assert low == UUID("f20c58b0-0000-0000-0000-000000000000")
    assert high == UUID("f20c58b0-ffff-ffff-ffff-ffffffffffff")
    assert ids.full("f20c58b0") is None
    assert ids.full("f20c58b0-0000-4000-8000-000000000000") is not None


@pytest.mark.parametrize("bad", ["abc", "xyz12345", "", "f20c58b0" * 5])
def test_a_bad_prefix_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        ids.prefix_range(bad, "RUN_ID")
    assert raised.value.field == "RUN_ID"


def test_one_match_resolves_none_is_not_found_several_list_the_candidates() -> None:
    a, b = UUID(int=1), UUID(int=2)
    assert ids.one("0000", [a], kind="run", field="RUN_ID") == a
    with pytest.raises(NotFound, match="no run id starts with '0000'"):
        ids.one("0000", [], kind="run", field="RUN_ID")
    with pytest.raises(InvalidInput, match=f"several runs: {a}, {b}"):
        ids.one("0000", [a, b], kind="run", field="RUN_ID")


def test_input_filters_nest_and_read_json_values() -> None:
    assert input_filter([]) is None
    assert input_filter([("input.incident_id", "INC-1"), ("input.meta.team", "a"),
                         ("input.meta.size", "3"), ("input.flag", "true"),
                         ("input.code", '"42"')]) == {
        "incident_id": "INC-1", "meta": {"team": "a", "size": 3}, "flag": True, "code": "42"}


@pytest.mark.parametrize("pairs", [
    [("input.", "x")], [("inputs.a", "x")], [("input.a..b", "x")],
    [("input.a", "1"), ("input.a", "2")], [("input.a", "1"), ("input.a.b", "2")]])
def test_malformed_or_conflicting_input_filters_are_refused(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidInput):
        input_filter(pairs)
