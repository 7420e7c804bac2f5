"""A run's evidence for someone outside the database, and its offline check (docs/dba.md,
"Export with proof").

An export is JSON lines, each canonical JSON (sorted keys, no spaces): a ``header``; per
run its ``run`` row, every timeline ``event``, ``decision``, ``approval`` and ``job`` (the
evidence views' rows) and the ``anchor`` heads signed outside the database that name the
run; then one ``seal`` line with the number of lines before it, the sha256 of their bytes
and an HMAC of that digest under a key derived from the server secret. `verify_export`
needs no database: any changed byte breaks the digest, a recomputed digest breaks the
seal's signature, and each run's chain must link from seq 1 to the head the run row
names, through every anchored head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from engine.core.canonical import canonical_json
from engine.core.errors import NotFound
from engine.runs.anchors import GENESIS, AnchorLog, head_signed
from engine.store import Database
from engine.store import evidence as q

VERSION = 1
_SEAL_LABEL = b"warden evidence export v1"


@dataclass(frozen=True)
class Scope:
    """What an export covers: one run, or a tenant's runs created in [since, until)."""

    run_id: UUID | None = None
    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def doc(self) -> dict[str, Any]:
        return {"run_id": None if self.run_id is None else str(self.run_id),
                "tenant_id": self.tenant_id,
                "since": None if self.since is None else self.since.isoformat(),
                "until": None if self.until is None else self.until.isoformat()}


def _seal(key: bytes, digest: str) -> str:
    seal_key = hmac.new(key, _SEAL_LABEL, hashlib.sha256).digest()
    return hmac.new(seal_key, digest.encode(), hashlib.sha256).hexdigest()


def _line(kind: str, name: str, doc: Any) -> str:
    return canonical_json({"type": kind, name: doc})


async def export(db: Database, scope: Scope, key: bytes,
                 anchor_log: AnchorLog | None = None) -> list[str]:
    """The export's lines (without newlines), sealed with ``key`` (the anchor key)."""
    lines = [canonical_json({"type": "header", "v": VERSION, "scope": scope.doc(),
                             "created_at": datetime.now(UTC).isoformat()})]
    heads: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for point in (anchor_log.points or []) if anchor_log is not None else []:
        heads[(point.tenant_id, str(point.run_id))].append(point.doc())
    async with db.transaction() as conn:
        await q.snapshot(conn)
        runs = await q.runs(conn, run_id=scope.run_id, tenant_id=scope.tenant_id,
                            since=scope.since, until=scope.until)
        if scope.run_id is not None and not runs:
            raise NotFound(f"run {scope.run_id} not found")
        for run in runs:
            tenant, run_id = run["tenant_id"], UUID(run["run_id"])
            lines.append(_line("run", "run", run))
            lines += [_line("event", "event", e) for e in await q.events(conn, tenant, run_id)]
            lines += [_line("decision", "decision", d)
                      for d in await q.decisions(conn, tenant, run_id)]
            lines += [_line("approval", "approval", a)
                      for a in await q.approvals(conn, tenant, run_id)]
            lines += [_line("job", "job", j) for j in await q.jobs(conn, tenant, run_id)]
            lines += [_line("anchor", "head", h)
                      for h in sorted(heads[(tenant, str(run_id))], key=lambda h: h["seq"])]
    digest = hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()
    lines.append(canonical_json({"type": "seal", "lines": len(lines), "sha256": digest,
                                 "sig": _seal(key, digest)}))
    return lines


@dataclass
class Checked:
    """What `verify_export` found: counts, and each problem with the line it is on."""

    runs: int = 0
    events: int = 0
    anchored: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        return {"runs": self.runs, "events": self.events, "anchored_heads": self.anchored,
                "problems": [{"line": n, "problem": p} for n, p in self.problems]}


def _lines(text: str) -> list[str]:
    """The export's lines; the API's document ({"lines": [...]}) is taken as its lines."""
    try:
        doc = json.loads(text)  # JSON lines of more than one line are not one document
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("lines"), list):
        return [canonical_json(item) for item in doc["lines"]]
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def verify_export(text: str, key: bytes) -> Checked:
    """Checks an export with no database (see the module docstring)."""
    checked = Checked()
    lines = _lines(text)
    docs: list[dict[str, Any]] = []
    for n, raw in enumerate(lines, start=1):
        try:
            doc = json.loads(raw)
        except ValueError:
            checked.problems.append((n, "not JSON"))
            doc = {}
        if doc and canonical_json(doc) != raw:
            checked.problems.append((n, "not as written: the line is not in canonical form"))
        docs.append(doc if isinstance(doc, dict) else {})
    _check_seal(lines, docs, key, checked)
    _check_runs(docs, key, checked)
    return checked


def _check_seal(lines: list[str], docs: list[dict[str, Any]], key: bytes,
                checked: Checked) -> None:
    if not docs or docs[-1].get("type") != "seal":
        checked.problems.append((len(lines), "no seal line at the end: the export was cut"))
        return
    seal = docs[-1]
    body = lines[:-1]
    if seal.get("lines") != len(body):
        checked.problems.append((len(lines), f"the seal counts {seal.get('lines')} lines, the "
                                             f"export has {len(body)}"))
    digest = hashlib.sha256("".join(f"{line}\n" for line in body).encode()).hexdigest()
    if digest != seal.get("sha256"):
        checked.problems.append((len(lines), "sha256 of the lines does not match the seal: "
                                             "the export was changed"))
    elif not hmac.compare_digest(str(seal.get("sig")), _seal(key, digest)):
        checked.problems.append((len(lines), "the seal's signature does not match: resealed "
                                             "without the key, or sealed by another server"))
    if not docs[0] or docs[0].get("type") != "header":
        checked.problems.append((1, "no header line"))


def _check_runs(docs: list[dict[str, Any]], key: bytes, checked: Checked) -> None:
    """Per run: events from seq 1, each prev_hash the previous hash, the last one the head
    the run row names; every anchored head signed and on the chain."""
    runs: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    chains: dict[tuple[str, str], dict[int, tuple[int, dict[str, Any]]]] = defaultdict(dict)
    heads: list[tuple[int, dict[str, Any]]] = []
    for n, doc in enumerate(docs, start=1):
        kind = doc.get("type")
        if kind == "run":
            run = doc["run"]
            runs[(run["tenant_id"], run["run_id"])] = (n, run)
        elif kind == "event":
            event = doc["event"]
            chains[(event["tenant_id"], event["run_id"])][int(event["seq"])] = (n, event)
        elif kind == "anchor":
            heads.append((n, doc["head"]))
    checked.runs = len(runs)
    checked.events = sum(len(c) for c in chains.values())
    checked.anchored = len(heads)
    for key_, (n, run) in runs.items():
        _check_chain(n, run, chains.get(key_, {}), checked)
    for key_ in chains.keys() - runs.keys():
        first = min(chains[key_].values(), key=lambda item: item[0])[0]
        checked.problems.append((first, f"events of run {key_[1]}, which the export lacks"))
    for n, head in heads:
        if not head_signed(key, head):
            checked.problems.append((n, "anchored head not signed by this server's key"))
            continue
        found = chains.get((head["tenant_id"], head["run_id"]), {}).get(int(head["seq"]))
        if found is None:
            checked.problems.append((n, f"run {head['run_id']} was anchored at seq "
                                        f"{head['seq']}, which the export lacks"))
        elif found[1]["hash"] != head["hash"]:
            checked.problems.append((found[0], f"run {head['run_id']} seq {head['seq']}: hash "
                                               f"differs from the anchor of {head['at']}"))


def _check_chain(n: int, run: dict[str, Any], chain: dict[int, tuple[int, dict[str, Any]]],
                 checked: Checked) -> None:
    prev = GENESIS
    for seq in range(1, int(run["timeline_seq"]) + 1):
        found = chain.get(seq)
        if found is None:
            checked.problems.append((n, f"run {run['run_id']}: seq {seq} is missing"))
            return
        line, event = found
        if event["prev_hash"] != prev:
            checked.problems.append((line, f"run {run['run_id']} seq {seq}: prev_hash does "
                                           "not link to the previous event"))
            return
        prev = event["hash"]
    if len(chain) != int(run["timeline_seq"]) or prev != run["timeline_hash"]:
        checked.problems.append((n, f"run {run['run_id']}: the head on the run (seq "
                                    f"{run['timeline_seq']}) is not the last event"))
