"""engine/process/lookback.py: a few seconds per pass, all the way once per full_s."""

from __future__ import annotations

import pytest

from engine.process import lookback, metrics
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


def test_a_slow_full_look_spaces_the_next_so_it_takes_at_most_its_share(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    monkeypatch.setattr(lookback.time, "monotonic", lambda: now[0])
    look = Lookback(window_s=10.0, full_s=60.0, max_share=0.05, loop="reconciler")
    assert look.next() is None
    with caplog.at_level("INFO", logger=lookback.__name__):
        look.took(5.0)  # an old snapshot made it walk for 5 s: the next in 100 s, not 60
    assert "the reconciler loop's full look took 5.0 s: the next in 100 s" in caplog.text
    now[0] += 99
    assert look.next() == 10.0
    now[0] += 1
    assert look.next() is None
    look.took(0.2)  # the snapshot is gone: back to the plain period
    assert look.gap_s == 60.0
    now[0] += 59
    assert look.next() == 10.0
    now[0] += 1
    assert look.next() is None


def test_a_quick_full_look_keeps_the_plain_period_says_nothing_and_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    look = Lookback(window_s=10.0, full_s=60.0, loop="reaper")
    before = _looks("reaper")
    with caplog.at_level("INFO", logger=lookback.__name__):
        look.took(1.0)
    assert look.gap_s == 60.0 and caplog.text == ""
    assert _looks("reaper") == before + 1


def _looks(loop: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "warden_full_look_seconds_count", {"loop": loop}) or 0.0


def test_look_records_only_an_all_the_way_pass_that_ended_without_an_exception(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(lookback.time, "monotonic", lambda: now[0])
    look = Lookback(window_s=10.0, full_s=60.0, max_share=0.05, loop="observer")
    before = _looks("observer")
    with pytest.raises(RuntimeError), look.look() as back:
        assert back is None
        now[0] += 30  # a failed 30 s pass says nothing of how long a full look takes
        raise RuntimeError("the pass failed")
    assert _looks("observer") == before and look.gap_s == 60.0
    now[0] += 60
    with look.look() as back:
        assert back is None
        now[0] += 6.0
    assert _looks("observer") == before + 1 and look.gap_s == pytest.approx(120.0)
    with look.look() as back:  # a window pass is not timed
        assert back == 10.0
        now[0] += 50
    assert _looks("observer") == before + 1 and look.gap_s == pytest.approx(120.0)


def test_full_pass_times_the_block_it_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(lookback.time, "monotonic", lambda: now[0])
    look = Lookback(window_s=0.0, full_s=60.0, max_share=0.05, loop="reconciler")
    with look.full_pass():
        now[0] += 4.0
    assert look.gap_s == pytest.approx(80.0)
