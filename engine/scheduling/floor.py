"""A scheduler's floor in the flagging order of runs (docs/design.md#scheduling-floors).

Every flagged run has a ``flag_seq`` at or above the floor, so a pass takes flagged runs
from the floor up and never walks the index entries of the flags cleared before it,
which an old snapshot keeps from being removed. The floor is raised, at most every
``refresh_s``, by ``warden.scheduling_floor`` in a statement of its own (its lock and its
read must come before the pass's transaction); when its lock is busy it stays. Every
``full_s`` a pass looks from 0 anyway: a run inserted with a ``flag_seq`` of its caller's
choosing (the engine role may insert one) is still found.
"""

from __future__ import annotations

import time

from engine.process.lookback import Lookback
from engine.store import Database
from engine.store import runs as runs_q


class SchedulingFloor:
    def __init__(self, db: Database, *, refresh_s: float = 0.2, full_s: float = 10.0) -> None:
        self.db = db
        self.refresh_s = refresh_s
        # when a pass looks from 0 (the first one does): the lookbacks' schedule, with no
        # window of its own (the floor is the window)
        self.full = Lookback(window_s=0.0, full_s=full_s)
        self.value = 0
        self._refreshed = float("-inf")

    async def for_pass(self) -> int:
        """The floor the next pass takes runs from: 0 when a full look is due."""
        if self.full.next() is None:
            return 0
        now = time.monotonic()
        if now - self._refreshed >= self.refresh_s:
            self._refreshed = now
            async with self.db.connection() as conn:
                raised = await runs_q.scheduling_floor(conn, self.value)
            if raised is not None:
                self.value = raised
        return self.value
