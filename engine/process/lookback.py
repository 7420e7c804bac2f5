"""How far back a periodic scan of a time-ordered index looks (docs/design.md#lookbacks).

The reaper scans expired leases by expiry and the observer of ends scans unobserved ends
by finish time. While an old snapshot is open, the entries of every lease and end
handled since stay in those indexes, all older than the live ones, and a scan from the
beginning walks them all each time. A scan that looks back only ``window_s`` from now
walks a few seconds' worth; one pass in every ``full_s`` looks back to the beginning, for
what a pass in between skipped (a row another transaction held, a loop that was down).
"""

from __future__ import annotations

import time


class Lookback:
    def __init__(self, *, window_s: float = 10.0, full_s: float = 60.0) -> None:
        self.window_s = window_s
        self.full_s = full_s
        self._full = float("-inf")  # the first pass looks back to the beginning

    def next(self) -> float | None:
        """Seconds the next pass looks back; None: all the way."""
        now = time.monotonic()
        if now - self._full >= self.full_s:
            self._full = now
            return None
        return self.window_s
