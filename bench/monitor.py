"""Watching a drain from outside: the stop condition, and what the backends are doing.

Every 0.2 s the monitor counts unfinished runs and samples pg_stat_activity for the
children's busy backends. The samples say where server-side time goes without
pg_stat_statements (which would need a restart of the shared server): ``active/CPU`` is
a backend executing, ``active/IO:WALSync`` or ``LWLock:WALWrite`` a commit waiting for
the disk, ``idle in transaction/Client:ClientRead`` a transaction waiting for its Python
client (round trips), ``Lock:*`` row-lock contention.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from bench import pg
from bench.workload import TENANT

POLL_S = 0.2
# how many of the awaited runs one poll of wait_finished probes by key, at most
WINDOW = 500


@dataclass
class Activity:
    samples: int = 0
    waits: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, busy: list[pg.Row]) -> None:
        self.samples += 1
        for row in busy:
            role = _role(str(row["application_name"]))
            self.waits[(role, str(row["state"]), str(row["wait"]))] += 1
            self.queries[(role, str(row["query"]))] += 1

    def summary(self, top: int = 8) -> dict[str, Any]:
        """Per role: busy backends on average, and the states they were seen in."""
        if not self.samples:
            return {}
        out: dict[str, Any] = {"samples": self.samples}
        for role in sorted({role for role, _, _ in self.waits}):
            seen = {(s, w): n for (r, s, w), n in self.waits.items() if r == role}
            queries = {q: n for (r, q), n in self.queries.items() if r == role}
            out[role] = {
                "busy_backends_avg": round(sum(seen.values()) / self.samples, 2),
                "states": {f"{s} / {w}": round(n / self.samples, 2)
                           for (s, w), n in Counter(seen).most_common(top)},
                "queries": {q: round(n / self.samples, 2)
                            for q, n in Counter(queries).most_common(top)},
            }
        return out


def _role(application_name: str) -> str:
    """bench-worker-2 → worker (both workers' backends together)."""
    return application_name.removeprefix("bench-").rsplit("-", 1)[0]


# Warden's polls take the bench's tenant; the peer's queue has none
_PARAMS = {"unfinished_runs": {"tenant": TENANT}, "any_unfinished_run": {"tenant": TENANT}}


async def unfinished(conn: pg.Conn, query: str = "unfinished_runs") -> int:
    return int((await pg.one(conn, query, _PARAMS.get(query)))["n"])


async def wait_drained(conn: pg.Conn, *, deadline: float, activity: Activity | None = None,
                       check: Callable[[], None] | None = None,
                       query: str = "unfinished_runs") -> int:
    """Polls until no run is unfinished or the loop clock passes ``deadline``; returns how
    many runs were left (0: drained). ``check`` raises if a child died meanwhile. The peer
    passes ``query="peer_queued"``: its jobs still in the queue table. Warden's runs are
    polled with ``any_unfinished_run`` (stops at the first), counted only at a missed
    deadline."""
    loop = asyncio.get_running_loop()
    probe = "any_unfinished_run" if query == "unfinished_runs" else query
    while True:
        left = await unfinished(conn, probe)
        if left == 0:
            return 0
        if loop.time() > deadline:
            return await unfinished(conn, query)
        if activity is not None:
            activity.add(await pg.rows(conn, "activity_sample"))
        if check is not None:
            check()
        await asyncio.sleep(POLL_S)


async def wait_finished(conn: pg.Conn, runs: Sequence[UUID], *, deadline: float,
                        check: Callable[[], None] | None = None) -> int:
    """Polls until every run of ``runs`` (in start order) is finished or the loop clock
    passes ``deadline``; returns how many were left (0: drained). Each poll looks up at
    most WINDOW runs by primary key from the first one not yet seen finished, and moves
    past the finished ones: no index walk over the runs of other rounds. Under an old
    snapshot, wait_drained's probe walked the entries of every run open since the
    snapshot before it found a live one (bench/README.md, session 11), and that was the
    bench's own load on the server it measures."""
    loop = asyncio.get_running_loop()
    first = 0
    while first < len(runs):
        window = list(runs[first:first + WINDOW])
        row = await pg.one(conn, "first_unfinished_of", {"tenant": TENANT, "run_ids": window})
        if row["i"] is None:
            first += len(window)
            continue  # all of this window finished: look at the next one at once
        first += int(row["i"]) - 1
        if loop.time() > deadline:
            return len(runs) - first  # at most this many (some after `first` may be done)
        if check is not None:
            check()
        await asyncio.sleep(POLL_S)
    return 0
