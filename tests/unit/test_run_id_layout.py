"""The layout of a run id (engine/core/ids.py new_run_id): minute block, then random."""

from __future__ import annotations

import uuid

from engine.core import ids


def test_the_first_byte_counts_minutes_and_wraps() -> None:
    minute = 60 * 1_000_000  # some minute, as Unix seconds
    first = ids.new_run_id(minute).bytes[0]
    assert ids.new_run_id(minute + 59.9).bytes[0] == first
    assert ids.new_run_id(minute + 60).bytes[0] == (first + 1) % 256
    assert ids.new_run_id(minute + 256 * 60).bytes[0] == first


def test_the_rest_is_random_and_marked_as_a_layout_of_our_own() -> None:
    made = [ids.new_run_id(0.0) for _ in range(1000)]
    assert len(set(made)) == 1000
    assert {(u.version, u.variant) for u in made} == {(8, uuid.RFC_4122)}
    # the short id's six digits after the minute's two are spread, not fixed
    assert len({str(u)[2:8] for u in made}) > 990
    # the 114 random bits vary everywhere outside the block, version and variant
    varied = 0
    for u in made[1:]:
        varied |= u.int ^ made[0].int
    assert varied == (1 << 120) - 1 & ~(0xF << 76) & ~(0x3 << 62)


def test_a_short_id_is_a_prefix_lookup_as_before() -> None:
    run_id = ids.new_run_id()
    low, high = ids.prefix_range(str(run_id)[:8], "RUN_ID")
    assert low <= run_id <= high
