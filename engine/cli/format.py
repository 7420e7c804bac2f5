"""Plain-text renderings for the terminal (the --json forms live in engine.runs.views)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.store.records import TimelineEvent


def format_timeline(events: Sequence[TimelineEvent]) -> list[str]:
    lines = []
    for e in events:
        where = " ".join(x for x in (e.step_id or "", f"@{e.attempt}" if e.attempt else "") if x)
        actor = f"  by {e.actor}" if e.actor else ""
        lines.append(f"{e.seq:>4}  {e.at:%H:%M:%S.%f}  {e.kind:<20} {where:<22}{actor}")
    return lines
