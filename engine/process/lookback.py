"""How far back a periodic scan of a time-ordered index looks (docs/design.md#lookbacks).

The reaper scans expired leases by expiry and the observer of ends scans unobserved ends
by finish time. While an old snapshot is open, the entries of every lease and end
handled since stay in those indexes, all older than the live ones, and a scan from the
beginning walks them all each time. A scan that looks back only ``window_s`` from now
walks a few seconds' worth; one pass in every ``full_s`` looks back to the beginning, for
what a pass in between skipped (a row another transaction held, a loop that was down).

A pass that looks all the way walks whatever an old snapshot keeps, and so takes longer
the older the snapshot; its reads then compete with every commit's WAL sync on the same
disk (bench/README.md, session 12). The caller says how long it took (``took``), and the
next one waits until that is at most ``max_share`` of the time between them.

A loop that decides and scans in one place writes ``with lookback.look() as back:``,
which times an all-the-way pass itself; one that decides first and scans later times the
pass with ``with lookback.full_pass():``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from engine.process import metrics

log = logging.getLogger(__name__)

# The share of a loop's time its all-the-way passes may take: a 5 s sweep runs at most
# every 100 s instead of every minute.
MAX_SHARE = 0.05


class Lookback:
    def __init__(self, *, window_s: float = 10.0, full_s: float = 60.0,
                 max_share: float = MAX_SHARE, loop: str = "") -> None:
        self.window_s = window_s
        self.full_s = full_s
        self.max_share = max_share
        self.loop = loop  # the warden_full_look_seconds label of the loop that looks
        self._took = 0.0  # how long the last all-the-way pass took
        self._full = float("-inf")  # the first pass looks back to the beginning

    @property
    def gap_s(self) -> float:
        """Seconds between the starts of two all-the-way passes."""
        return max(self.full_s, self._took / self.max_share)

    def next(self) -> float | None:
        """Seconds the next pass looks back; None: all the way."""
        now = time.monotonic()
        if now - self._full >= self.gap_s:
            self._full = now
            return None
        return self.window_s

    @contextmanager
    def look(self) -> Iterator[float | None]:
        """The next pass's lookback (``next``); an all-the-way pass's time is recorded
        when the block ends without an exception."""
        back = self.next()
        if back is not None:
            yield back
            return
        with self.full_pass():
            yield None

    @contextmanager
    def full_pass(self) -> Iterator[None]:
        """Times an all-the-way pass and records it (``took``) if the block ends without
        an exception: a pass that failed says nothing of how long a full look takes."""
        began = time.monotonic()
        yield
        self.took(time.monotonic() - began)

    def took(self, seconds: float) -> None:
        """The all-the-way pass just made took ``seconds``: the next one waits at least
        ``seconds / max_share``, and never less than ``full_s``."""
        metrics.full_look(self.loop, seconds)
        stretched = self.gap_s > self.full_s
        self._took = seconds
        if stretched or self.gap_s > self.full_s:  # and once more when it comes back
            log.info("the %s loop's full look took %.1f s: the next in %.0f s", self.loop,
                     seconds, self.gap_s, extra={"loop": self.loop,
                                                 "full_look_s": round(seconds, 3),
                                                 "next_in_s": round(self.gap_s)})
