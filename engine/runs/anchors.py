"""Anchors: the timeline's chain heads written outside the database (docs/dba.md,
"Anchors").

An anchor is one line of ``anchors.jsonl`` in a directory: the heads (tenant, run, seq,
hash) of every run whose timeline grew since the previous line, signed with a key held
outside the database (derived from the server secret, WARDEN_SECRET_KEY) and chained to
the previous line's signature. Lines are only ever appended, under an exclusive lock on
the file, so several `warden serve` processes may share a directory. A verify with the
anchors compares each anchored (run, seq) with the hash the database holds there now: a
chain rewritten and re-signed by someone holding the database's chain key still differs
from what was anchored before the rewrite.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from engine.core.canonical import canonical_json
from engine.store import Database
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


@dataclass
class AnchorLog:
    """What an anchor file holds: the points of its valid lines and what is wrong with it."""

    lines: int = 0
    last_sig: str = GENESIS
    points: list[Point] | None = None
    problems: list[Problem] | None = None

    def anchored_seq(self) -> dict[tuple[str, UUID], int]:
        seqs: dict[tuple[str, UUID], int] = {}
        for p in self.points or []:
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
            log.points.append(Point(h["tenant_id"], UUID(h["run_id"]), int(h["seq"]),
                                    str(h["hash"]), n, str(doc.get("at")), str(h.get("sig"))))
    return log


def _path(directory: Path) -> Path:
    return directory / FILE_NAME


async def anchor(db: Database, directory: Path, key: bytes) -> tuple[int | None, int]:
    """Appends one line with the heads of every run that grew since the last line; returns
    (its line number, runs anchored), or (None, 0) when nothing changed."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(_path(directory), os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
    with os.fdopen(fd, "r+", encoding="utf-8") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file closes
        file.seek(0)
        log = parse(file.read(), key)
        if log.problems:
            raise AnchorFileBroken(log.problems)
        anchored = log.anchored_seq()
        async with db.connection() as conn:
            heads = await q.run_heads(conn)
        changed = [h for h in heads if h.seq > anchored.get((h.tenant_id, h.run_id), 0)]
        if not changed:
            return None, 0
        n, at = log.lines + 1, datetime.now(UTC).isoformat(timespec="microseconds")
        doc: dict[str, Any] = {
            "v": VERSION, "kind": "heads", "n": n, "prev": log.last_sig, "at": at,
            "heads": [head_doc(key, n, at, h.tenant_id, h.run_id, h.seq, h.hash)
                      for h in changed]}
        doc["sig"] = sign(key, doc)
        file.write(canonical_json(doc) + "\n")
        file.flush()
        os.fsync(file.fileno())
        return log.lines + 1, len(changed)


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
    is gone or differs (everything at or before it is in doubt)."""
    by_run: dict[tuple[str, UUID], list[Point]] = defaultdict(list)
    for p in log.points or []:
        by_run[(p.tenant_id, p.run_id)].append(p)
    if not by_run:
        return []
    unique = sorted({(p.tenant_id, p.run_id, p.seq) for p in log.points or []})
    async with db.connection() as conn:
        found = {(h.tenant_id, h.run_id, h.seq): h for h in await q.hashes_at(conn, unique)}
    problems = []
    for (tenant, run), points in sorted(by_run.items(), key=lambda item: str(item[0])):
        problem = _first_difference(tenant, run, sorted(points, key=lambda p: p.seq), found)
        if problem is not None:
            problems.append(problem)
    return problems


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
