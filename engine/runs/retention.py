"""Retention that keeps the proof (docs/dba.md, "Partitions and retention").

The timeline and policy_decisions are partitioned by month of their run's creation, so a
month's partition holds whole runs. For each partition whose runs all finished before the
cutoff (and that nothing open still needs), `retain`:

1. exports the evidence of the month's runs (engine/runs/evidence.py, with their anchored
   heads) to one file in the archive directory, then reads the file back and verifies it
   as `warden audit verify-export` would; any problem keeps the partition;
2. appends a ``retention`` line to the anchors (engine/runs/anchors.py): the runs' final
   heads, the archive's name and sha256, signed outside the database;
3. calls warden.retention_drop, which re-checks under lock that the month's runs are
   exactly those exported, with the same heads, then detaches and drops the partitions,
   removes the runs' mutable rows and records them in warden.archived_runs.

The anchor line comes before the drop: should the drop fail, the runs stay and are
checked as any anchored run; the other order could leave dropped runs no anchor names.
Nothing here deletes a row of an append-only table or disables a trigger; only the schema
owner may run it (the database refuses anyone else the DETACH).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from engine.core.errors import WardenError
from engine.runs import anchors, evidence
from engine.store import Database
from engine.store import retention as q
from engine.store.timeline import Head


@dataclass
class Outcome:
    """What retention did (or, in a dry run, would do) with one partition."""

    month: str
    runs: int
    open_runs: int
    recent_runs: int
    needed_runs: int
    action: str  # archived, dropped_empty, kept, would_archive, failed
    reason: str | None = None
    archive: str | None = None
    sha256: str | None = None
    anchor_line: int | None = None

    def doc(self) -> dict[str, Any]:
        return dict(self.__dict__)


def month_name(start: datetime) -> str:
    return start.astimezone(UTC).strftime("%Y-%m")


def _why_kept(p: q.Partition, cutoff: datetime) -> str:
    if p.month_end > cutoff:
        return "the month ends after the cutoff"
    parts = [f"{count} run(s) {text}" for count, text in (
        (p.open_runs, "still open"), (p.recent_runs, "finished after the cutoff"),
        (p.needed_runs, "needed by an open rerun or a notification being delivered"))
        if count]
    return "; ".join(parts) or "the cutoff is less than a day old"


async def plan(db: Database, cutoff: datetime) -> list[q.Partition]:
    async with db.connection() as conn:
        return await q.partitions(conn, cutoff)


async def retain(db: Database, *, cutoff: datetime, archive_dir: Path | None,
                 anchor_dir: Path | None, key: bytes, by: str,
                 dry_run: bool) -> list[Outcome]:
    """Archives and drops every partition that may go; reports every partition."""
    outcomes = []
    for p in await plan(db, cutoff):
        outcome = Outcome(month_name(p.month_start), p.runs, p.open_runs, p.recent_runs,
                          p.needed_runs, "kept")
        outcomes.append(outcome)
        if not p.droppable:
            outcome.reason = _why_kept(p, cutoff)
            continue
        if dry_run:
            outcome.action = "would_archive"
            continue
        assert archive_dir is not None and anchor_dir is not None
        try:
            await _archive(db, p, outcome, cutoff=cutoff, archive_dir=archive_dir,
                           anchor_dir=anchor_dir, key=key, by=by)
        except (WardenError, anchors.AnchorFileBroken, OSError, RetentionRefused) as exc:
            outcome.action, outcome.reason = "failed", str(exc)
    return outcomes


class RetentionRefused(Exception):
    """The archive did not verify: the partition is kept."""


async def _archive(db: Database, p: q.Partition, outcome: Outcome, *, cutoff: datetime,
                   archive_dir: Path, anchor_dir: Path, key: bytes, by: str) -> None:
    if p.runs == 0:  # nothing to archive or to name: the empty partitions just go
        async with db.transaction() as conn:
            await q.drop(conn, month_start=p.month_start, cutoff=cutoff, runs=[],
                         archive="", sha256="0" * 64, by=by)
        outcome.action = "dropped_empty"
        return
    log = anchors.read(anchor_dir, key)
    if log.problems and (anchor_dir / anchors.FILE_NAME).exists():
        raise anchors.AnchorFileBroken(log.problems)
    scope = evidence.Scope(since=p.month_start, until=p.month_end)
    lines = await evidence.export(db, scope, key, log)
    name = (f"warden-archive-{outcome.month}-"
            f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.jsonl")
    path = archive_dir / name
    archive_dir.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}\n" for line in lines).encode()
    with open(path, "xb") as file:  # never over an existing archive
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    written = path.read_bytes()  # what is checked is what is on disk
    checked = evidence.verify_export(written.decode(), key)
    if checked.problems:
        raise RetentionRefused(f"the archive {path} does not verify: "
                               + "; ".join(f"line {n}: {m}" for n, m in checked.problems))
    heads = _heads(lines)
    if checked.runs != p.runs or len(heads) != p.runs:
        raise RetentionRefused(f"the archive {path} holds {checked.runs} run(s), the "
                               f"partition {p.runs}: the runs moved; run retention again")
    sha256 = hashlib.sha256(written).hexdigest()
    outcome.archive, outcome.sha256 = str(path), sha256
    outcome.anchor_line = await anchors.retain(anchor_dir, key, month=outcome.month,
                                               archive=name, sha256=sha256, heads=heads)
    async with db.transaction() as conn:
        await q.drop(conn, month_start=p.month_start, cutoff=cutoff, runs=heads,
                     archive=name, sha256=sha256, by=by)
    outcome.action = "archived"


def _heads(lines: list[str]) -> list[Head]:
    """The final head of each run in an export: what the drop must find unchanged."""
    heads = []
    for line in lines:
        doc = json.loads(line)
        if doc.get("type") == "run":
            run = doc["run"]
            heads.append(Head(run["tenant_id"], UUID(run["run_id"]), int(run["timeline_seq"]),
                              str(run["timeline_hash"])))
    return heads
