"""engine/process/lookback.py: a few seconds per pass, all the way once per full_s."""

from __future__ import annotations

import pytest

from engine.process import lookback
from engine.process.lookback import Lookback


def test_the_first_pass_looks_all_the_way_then_a_window_until_a_full_look_is_due(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(lookback.time, "monotonic", lambda: now[0])
    look = Lookback(window_s=10.0, full_s=60.0)
    assert look.next() is None
    now[0] += 1
    assert look.next() == 10.0
    now[0] += 58
    assert look.next() == 10.0
    now[0] += 1
    assert look.next() is None
    assert look.next() == 10.0
