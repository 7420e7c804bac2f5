"""Export with proof (engine/runs/evidence.py): an export verifies with no database, and
any changed byte, a reseal without the key, a dropped event or a rewritten anchored
event is caught."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from engine.core.errors import NotFound
from engine.runs import anchors, evidence
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from tests.db.test_evidence import _change_run
from tests.db.test_keyed_chain import RECOMPUTE_KEYED, _forge

pytestmark = pytest.mark.anyio

KEY = anchors.anchor_key(b"s" * 40)


def _reseal(lines: list[str], key: bytes | None) -> str:
    """The export with its seal recomputed: with the key (an insider) or without."""
    import hashlib

    body = lines[:-1]
    digest = hashlib.sha256("".join(f"{line}\n" for line in body).encode()).hexdigest()
    seal = json.loads(lines[-1])
    seal.update(sha256=digest, lines=len(body))
    if key is not None:
        seal["sig"] = evidence._seal(key, digest)
    return "".join(f"{line}\n" for line in [*body, evidence.canonical_json(seal)])


async def test_an_export_verifies_offline_and_a_one_byte_change_is_caught(
        svc: Services, scheduler: Scheduler, tmp_path: Path) -> None:
    run_id, _ = await _change_run(svc, scheduler)
    await anchors.anchor(svc.db, tmp_path, KEY)
    lines = await evidence.export(svc.db, evidence.Scope(run_id=UUID(run_id)), KEY,
                                  anchors.read(tmp_path, KEY))
    text = "".join(f"{line}\n" for line in lines)
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds[0] == "header" and kinds[-1] == "seal"
    assert {"run", "event", "decision", "approval", "job", "anchor"} <= set(kinds)
    checked = evidence.verify_export(text, KEY)
    assert checked.problems == [] and checked.runs == 1 and checked.anchored == 1
    assert checked.events == kinds.count("event")
    # one byte anywhere
    at = text.index('"decided_by":"carol"') + len('"decided_by":"caro')
    changed = text[:at] + "x" + text[at + 1:]
    assert [p for _, p in evidence.verify_export(changed, KEY).problems] == [
        "sha256 of the lines does not match the seal: the export was changed"]
    # resealed by someone without the server secret
    forged = _reseal(changed.splitlines(), None)
    assert ["resealed without the key" in p for _, p in
            evidence.verify_export(forged, KEY).problems] == [True]
    # the API's JSON document of the same lines verifies too
    api_doc = json.dumps({"run_id": run_id, "lines": [json.loads(x) for x in lines]}, indent=1)
    assert evidence.verify_export(api_doc, KEY).problems == []
    assert evidence.verify_export(text, anchors.anchor_key(b"t" * 40)).problems != []


async def test_an_insider_resealing_still_meets_the_chain_and_the_anchors(
        svc: Services, scheduler: Scheduler, db_url: str, tmp_path: Path) -> None:
    run_id, _ = await _change_run(svc, scheduler)
    await anchors.anchor(svc.db, tmp_path, KEY)
    lines = await evidence.export(svc.db, evidence.Scope(run_id=UUID(run_id)), KEY,
                                  anchors.read(tmp_path, KEY))
    # an event dropped and the export resealed with the key: the chain has a hole
    events = [i for i, line in enumerate(lines) if json.loads(line)["type"] == "event"]
    dropped = [line for i, line in enumerate(lines) if i != events[2]]
    problems = evidence.verify_export(_reseal(dropped, KEY), KEY).problems
    assert [p for _, p in problems] == [f"run {run_id}: seq 3 is missing"]
    # the database rewritten and re-signed with the chain key, then exported: the anchored
    # head (signed outside the database) no longer matches
    _forge(db_url, run_id, RECOMPUTE_KEYED)
    rewritten = await evidence.export(svc.db, evidence.Scope(run_id=UUID(run_id)), KEY,
                                      anchors.read(tmp_path, KEY))
    [(_, problem)] = evidence.verify_export("\n".join(rewritten) + "\n", KEY).problems
    assert "hash differs from the anchor" in problem


async def test_a_tenant_over_a_time_range_and_an_unknown_run(
        svc: Services, scheduler: Scheduler) -> None:
    run_id, _ = await _change_run(svc, scheduler)
    now = datetime.now(UTC)
    scope = evidence.Scope(tenant_id="default", since=now - timedelta(hours=1),
                           until=now + timedelta(hours=1))
    lines = await evidence.export(svc.db, scope, KEY)
    assert [json.loads(x)["run"]["run_id"] for x in lines if '"type":"run"' in x] == [run_id]
    empty = await evidence.export(svc.db, evidence.Scope(tenant_id="other"), KEY)
    assert evidence.verify_export("\n".join(empty) + "\n", KEY).runs == 0
    with pytest.raises(NotFound):
        await evidence.export(svc.db, evidence.Scope(run_id=uuid4()), KEY)
