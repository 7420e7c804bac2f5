"""Anchors: the timeline's chain heads written outside the database (docs/dba.md,
"Anchors").

An anchor is one line of ``anchors.jsonl`` in a directory: the heads (tenant, run, seq,
hash) of every run whose timeline grew since the previous line, signed with a key held
outside the database (derived from the server secret, WARDEN_SECRET_KEY) and chained to
the previous line's signature. Lines are only ever appended, under an exclusive lock on
the file, so several `warden serve` processes may share a directory. A verify with the
anchors compares each anchored (run, seq) with the hash the database holds there now: a
chain rewritten and re-signed by someone holding the database's chain key still differs
from what was anchored before the rewrite. A chain is verified before its head is anchored:
a broken one is refused and named, never anchored.

A ``retention`` line (written by `warden retention`, engine/runs/retention.py) names the
runs whose partition was archived and dropped: their final heads, the archive file and its
sha256. A verify with the anchors then reports those runs as archived, not as gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TextIO
from uuid import UUID

from engine.core.canonical import canonical_json
from engine.store import Database
from engine.store import evidence as evidence_q
from engine.store import retention as retention_q
from engine.store import timeline as q

FILE_NAME = "anchors.jsonl"
VERSION = 1
GENESIS = "0" * 64
_KEY_LABEL = b"warden audit anchors v1"


def anchor_key(server_secret: bytes) -> bytes:
    """The key anchors are signed with: derived from the server secret, never stored."""
    return hmac.new(server_secret, _KEY_LABEL, hashlib.sha256).digest()


def head_doc(key: bytes, n: int, at: str, tenant_id: str, run_id: UUID, seq: int,
             hash: str) -> dict[str, Any]:
    """One head of an anchor line, signed on its own as well (``sig`` over the head with the
    line's ``n`` and ``at``), so an export can carry its runs' heads without the other
    runs of the line (engine/runs/evidence.py)."""
    head: dict[str, Any] = {"tenant_id": tenant_id, "run_id": str(run_id), "seq": seq,
                            "hash": hash}
    head["sig"] = sign(key, {**head, "n": n, "at": at})
    return head


def head_signed(key: bytes, head: dict[str, Any]) -> bool:
    """Whether a head taken out of its line (with the line's ``n`` and ``at``) is signed."""
    return hmac.compare_digest(str(head.get("sig")), sign(key, head))


def sign(key: bytes, doc: dict[str, Any]) -> str:
    """HMAC-SHA-256 of the canonical JSON of ``doc`` without its ``sig``."""
    body = {k: v for k, v in doc.items() if k != "sig"}
    return hmac.new(key, canonical_json(body).encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Problem:
    """Something an anchor check found: in the anchor file (``run_id`` None) or in a run."""

    line: int | None
    tenant_id: str | None
    run_id: UUID | None
    seq: int | None
    problem: str

    def doc(self) -> dict[str, Any]:
        return {"line": self.line, "tenant_id": self.tenant_id,
                "run_id": None if self.run_id is None else str(self.run_id),
                "seq": self.seq, "problem": self.problem}


@dataclass(frozen=True)
class Point:
    """One anchored head: the hash a run's chain had at seq when line ``line`` was written."""

    tenant_id: str
    run_id: UUID
    seq: int
    hash: str
    line: int
    at: str
    sig: str

    def doc(self) -> dict[str, Any]:
        """The signed head as an export carries it (checked by `head_signed`)."""
        return {"tenant_id": self.tenant_id, "run_id": str(self.run_id), "seq": self.seq,
                "hash": self.hash, "n": self.line, "at": self.at, "sig": self.sig}


@dataclass(frozen=True)
class Retained:
    """A run a retention line names: its final head, archived in ``archive``."""

    point: Point
    archive: str
    sha256: str


@dataclass
class AnchorLog:
    """What an anchor file holds: the points of its valid lines and what is wrong with it."""

    lines: int = 0
    last_sig: str = GENESIS
    points: list[Point] | None = None
    problems: list[Problem] | None = None
    retained: dict[tuple[str, UUID], Retained] = field(default_factory=dict)

    def anchored_seq(self) -> dict[tuple[str, UUID], int]:
        seqs: dict[tuple[str, UUID], int] = {}
        for p in [*(self.points or []), *(r.point for r in self.retained.values())]:
            key = (p.tenant_id, p.run_id)
            seqs[key] = max(seqs.get(key, 0), p.seq)
        return seqs


def parse(text: str, key: bytes) -> AnchorLog:
    """Checks every line's signature, number and link to the line before; keeps the points
    of the lines that hold."""
    log = AnchorLog(points=[], problems=[])
    assert log.points is not None and log.problems is not None
    for n, raw in enumerate(text.splitlines(), start=1):
        log.lines = n
        try:
            doc = json.loads(raw)
            heads = doc["heads"]
            sig = doc["sig"]
        except (ValueError, KeyError, TypeError):
            log.problems.append(Problem(n, None, None, None, "not an anchor line (bad JSON)"))
            continue
        if not hmac.compare_digest(str(sig), sign(key, doc)):
            log.problems.append(Problem(n, None, None, None,
                                        "signature does not match: the line was edited, or "
                                        "signed with another key"))
            log.last_sig = str(sig)  # the next line is judged on its own link
            continue
        if doc.get("n") != n or doc.get("prev") != log.last_sig:
            log.problems.append(Problem(n, None, None, None,
                                        f"line {doc.get('n')} does not follow line {n - 1}: a "
                                        "line was removed, reordered or inserted"))
        log.last_sig = sig
        for h in heads:
            point = Point(h["tenant_id"], UUID(h["run_id"]), int(h["seq"]), str(h["hash"]), n,
                          str(doc.get("at")), str(h.get("sig")))
            if doc.get("kind") == "retention":
                archive = doc.get("archive") or {}
                log.retained[(point.tenant_id, point.run_id)] = Retained(
                    point, str(archive.get("file")), str(archive.get("sha256")))
            else:
                log.points.append(point)
    return log


def _path(directory: Path) -> Path:
    return directory / FILE_NAME


class Anchored(NamedTuple):
    """What `anchor` did: the line written (None: nothing changed), the runs it anchored,
    and the runs it refused because their chain does not verify."""

    line: int | None
    runs: int
    broken: list[q.ChainProblem]


async def anchor(db: Database, directory: Path, key: bytes) -> Anchored:
    """Appends one line with the heads of every run that grew since the last line and
    whose chain verifies; a run whose chain is broken is not anchored (``broken`` names
    it, with the first seq that fails), so an anchor never vouches for a tampered chain."""
    with _locked(directory, key) as (file, log):
        anchored = log.anchored_seq()
        async with db.transaction() as conn:
            # the heads and their check read one snapshot: the head anchored is the head
            # that was verified, however the run moves meanwhile
            await evidence_q.snapshot(conn)
            changed = [h for h in await q.run_heads(conn)
                       if h.seq > anchored.get((h.tenant_id, h.run_id), 0)]
            broken = await q.problems_of_runs(conn, [(h.tenant_id, h.run_id) for h in changed])
        refused = {(p.tenant_id, p.run_id) for p in broken}
        sound = [h for h in changed if (h.tenant_id, h.run_id) not in refused]
        if not sound:
            return Anchored(None, 0, broken)
        line = _append(file, log, key, {"kind": "heads"}, sound)
        return Anchored(line, len(sound), broken)


async def retain(directory: Path, key: bytes, *, month: str, archive: str, sha256: str,
                 heads: list[q.Head]) -> int:
    """Appends a ``retention`` line: ``heads`` (the final heads of the runs of ``month``)
    are archived in the file ``archive`` with this sha256. Written before the partition is
    dropped: until the drop commits, the runs are still in the database and compared as
    any anchored run is. Returns the line's number."""
    with _locked(directory, key) as (file, log):
        return _append(file, log, key, {"kind": "retention", "partition": month,
                                        "archive": {"file": archive, "sha256": sha256}},
                       heads)


@contextmanager
def _locked(directory: Path, key: bytes) -> Iterator[tuple[TextIO, AnchorLog]]:
    """The anchor file, exclusively locked, with what it holds; refused if it does not
    verify (no line is ever added to a file that does not)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(_path(directory), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "r+", encoding="utf-8") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file closes
        file.seek(0)
        log = parse(file.read(), key)
        if log.problems:
            raise AnchorFileBroken(log.problems)
        yield file, log


def _append(file: TextIO, log: AnchorLog, key: bytes, fields: dict[str, Any],
            heads: list[q.Head]) -> int:
    n, at = log.lines + 1, datetime.now(UTC).isoformat(timespec="microseconds")
    doc: dict[str, Any] = {
        "v": VERSION, **fields, "n": n, "prev": log.last_sig, "at": at,
        "heads": [head_doc(key, n, at, h.tenant_id, h.run_id, h.seq, h.hash) for h in heads]}
    doc["sig"] = sign(key, doc)
    file.write(canonical_json(doc) + "\n")
    file.flush()
    os.fsync(file.fileno())
    return n


class AnchorFileBroken(Exception):
    """The anchor file does not verify, so no line is added to it."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"line {p.line}: {p.problem}" for p in problems))
        self.problems = problems


def read(directory: Path, key: bytes) -> AnchorLog:
    path = _path(directory)
    if not path.exists():
        return AnchorLog(points=[], problems=[Problem(
            None, None, None, None, f"no anchor file {path}")])
    return parse(path.read_text(encoding="utf-8"), key)


async def check(db: Database, log: AnchorLog) -> list[Problem]:
    """Compares every anchored point with the database: per run, the first point whose event
    is gone or differs (everything at or before it is in doubt). A run a retention line
    names and the database no longer holds is archived, not gone: its earlier anchors must
    agree with the archived head (none beyond it, the same hash at its seq). A run the
    database lists as archived (warden.archived_runs) that no retention line names is a
    problem: the database's word alone is not the proof."""
    by_run: dict[tuple[str, UUID], list[Point]] = defaultdict(list)
    for p in [*(log.points or []), *(r.point for r in log.retained.values())]:
        by_run[(p.tenant_id, p.run_id)].append(p)
    unique = sorted({(t, r, p.seq) for (t, r), points in by_run.items() for p in points})
    async with db.connection() as conn:
        found = {(h.tenant_id, h.run_id, h.seq): h for h in await q.hashes_at(conn, unique)}
        archived = await retention_q.archived(conn, None, None)
    problems = []
    for (tenant, run), points in sorted(by_run.items(), key=lambda item: str(item[0])):
        points = sorted(points, key=lambda p: p.seq)
        retained = log.retained.get((tenant, run))
        if retained is not None and not found[(tenant, run, points[0].seq)].run_exists:
            problem = _archived_difference(tenant, run, points, retained)
        else:
            problem = _first_difference(tenant, run, points, found)
        if problem is not None:
            problems.append(problem)
    for a in archived:
        if (a.tenant_id, a.run_id) not in log.retained:
            problems.append(Problem(None, a.tenant_id, a.run_id, a.seq,
                                    f"the database lists the run as archived in {a.archive}, "
                                    "but no retention anchor names it"))
    return problems


def _archived_difference(tenant: str, run: UUID, points: list[Point],
                         retained: Retained) -> Problem | None:
    head = retained.point
    for p in points:
        if p.seq > head.seq:
            return Problem(p.line, tenant, run, p.seq,
                           f"anchored at seq {p.seq} (line {p.line}), beyond the head seq "
                           f"{head.seq} archived in {retained.archive} (line {head.line})")
        if p.seq == head.seq and p.hash != head.hash:
            return Problem(p.line, tenant, run, p.seq,
                           f"the head archived in {retained.archive} (line {head.line}) "
                           f"differs from its anchor of line {p.line}: hash "
                           f"{head.hash[:16]}… archived, {p.hash[:16]}… anchored")
    return None


def _first_difference(tenant: str, run: UUID, points: list[Point],
                      found: dict[tuple[str, UUID, int], q.HashAt]) -> Problem | None:
    matched: Point | None = None
    for p in points:
        now = found[(tenant, run, p.seq)]
        if not now.run_exists:
            return Problem(p.line, tenant, run, p.seq,
                           f"the run is gone from the database (anchored at seq {p.seq}, "
                           f"line {p.line}, {p.at})")
        if now.hash is None:
            return Problem(p.line, tenant, run, p.seq,
                           f"no event at seq {p.seq} any more (anchored at line {p.line}, "
                           f"{p.at}): the timeline was cut")
        if now.hash != p.hash:
            since = (f"; seq {matched.seq} (line {matched.line}) still matches"
                     if matched is not None else "")
            return Problem(p.line, tenant, run, p.seq,
                           f"the event at seq {p.seq} differs from its anchor (line {p.line}, "
                           f"{p.at}): hash {now.hash[:16]}… in the database, {p.hash[:16]}… "
                           f"anchored; an event at or before seq {p.seq} was rewritten{since}")
        matched = p
    return None
