"""Anchors outside the database (engine/runs/anchors.py): a rewrite re-signed by someone
holding the chain key still differs from what was anchored; an edited or cut anchor file
is caught too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest

from engine.daemons.serve import EngineConfig, run_engine
from engine.runs import anchors
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support
from tests.db.test_keyed_chain import RECOMPUTE_KEYED, WORKFLOW, _forge, _verify

pytestmark = pytest.mark.anyio

KEY = anchors.anchor_key(b"s" * 40)


async def _run(db: Database, scheduler: Scheduler, *, finish: bool = True) -> str:
    run = await support.start(db, "one")
    await support.settle(scheduler)
    if finish:
        [job] = await support.claim(db, ["t.a"])
        await support.complete(db, job)
        await support.settle(scheduler)
    return str(run.run_id)


def _lines(directory: Path) -> list[dict[str, object]]:
    text = (directory / anchors.FILE_NAME).read_text()
    return [json.loads(line) for line in text.splitlines()]


async def _problems(db: Database, directory: Path) -> list[tuple[object, ...]]:
    log = anchors.read(directory, KEY)
    found = [*(log.problems or []), *await anchors.check(db, log)]
    return [(p.line, None if p.run_id is None else str(p.run_id), p.seq, p.problem)
            for p in found]


async def test_each_anchor_holds_the_heads_of_the_runs_that_grew_since_the_last(
        db: Database, scheduler: Scheduler, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    first = await _run(db, scheduler)
    waiting = await _run(db, scheduler, finish=False)
    assert await anchors.anchor(db, tmp_path, KEY) == (1, 2, [])
    assert await anchors.anchor(db, tmp_path, KEY) == (None, 0, [])
    [job] = await support.claim(db, ["t.a"])
    await support.complete(db, job)
    await support.settle(scheduler)
    assert await anchors.anchor(db, tmp_path, KEY) == (2, 1, [])
    one, two = _lines(tmp_path)
    assert {h["run_id"] for h in one["heads"]} == {first, waiting}  # type: ignore[attr-defined]
    assert [h["run_id"] for h in two["heads"]] == [waiting]  # type: ignore[index]
    assert (one["n"], two["n"], two["prev"]) == (1, 2, one["sig"])
    assert await _problems(db, tmp_path) == []


async def test_a_rewrite_re_signed_with_the_chain_key_is_caught_by_the_anchors(
        db: Database, scheduler: Scheduler, db_url: str, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    run_id = await _run(db, scheduler)
    other = await _run(db, scheduler)
    await anchors.anchor(db, tmp_path, KEY)
    [head] = [h for h in _lines(tmp_path)[0]["heads"]  # type: ignore[attr-defined]
              if h["run_id"] == run_id]
    _forge(db_url, run_id, RECOMPUTE_KEYED)  # by someone who holds the database's key
    assert _verify(db_url, run_id)  # the chain alone cannot tell
    [(line, run, seq, problem)] = await _problems(db, tmp_path)
    assert (line, run, seq) == (1, run_id, head["seq"])
    assert "differs from its anchor" in str(problem) and "was rewritten" in str(problem)
    assert _verify(db_url, other)


async def test_a_cut_timeline_and_a_deleted_run_are_caught(
        db: Database, scheduler: Scheduler, db_url: str, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    cut = await _run(db, scheduler)
    gone = await _run(db, scheduler)
    await anchors.anchor(db, tmp_path, KEY)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        [(last,)] = conn.execute("SELECT timeline_seq FROM warden.runs WHERE run_id = %s",
                                 [cut]).fetchall()
        # cut the tail and move the head back to the new last event: the chain holds
        conn.execute("DELETE FROM warden.timeline WHERE run_id = %s AND seq = %s", [cut, last])
        conn.execute("UPDATE warden.runs SET timeline_seq = timeline_seq - 1, timeline_hash ="
                     " (SELECT hash FROM warden.timeline WHERE run_id = %(r)s ORDER BY seq DESC"
                     " LIMIT 1) WHERE run_id = %(r)s", {"r": cut})
        for table in ("timeline", "policy_decisions", "jobs", "approvals", "steps", "runs"):
            conn.execute(f"DELETE FROM warden.{table} WHERE run_id = %s", [gone])
    assert _verify(db_url, cut)
    found = {run: str(problem) for _, run, _, problem in await _problems(db, tmp_path)}
    assert "the timeline was cut" in found[cut]
    assert "the run is gone from the database" in found[gone]


async def test_an_edited_or_removed_anchor_line_is_caught_and_blocks_new_anchors(
        db: Database, scheduler: Scheduler, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    for _ in range(3):
        await _run(db, scheduler, finish=False)
        await anchors.anchor(db, tmp_path, KEY)
    path = tmp_path / anchors.FILE_NAME
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    path.write_text(lines[0] + lines[2])
    assert [(line, p) for line, _, _, p in await _problems(db, tmp_path)] == [
        (2, "line 3 does not follow line 1: a line was removed, reordered or inserted")]
    path.write_text(original.replace('"seq":', '"seq":1', 1))
    [(line, _, _, problem)] = await _problems(db, tmp_path)
    assert line == 1 and "signature does not match" in str(problem)
    with pytest.raises(anchors.AnchorFileBroken):
        await anchors.anchor(db, tmp_path, KEY)
    # signed with another server secret: every line fails
    path.write_text(original)
    other = anchors.read(tmp_path, anchors.anchor_key(b"t" * 40))
    assert len(other.problems or []) == 3 and not other.points


async def test_serve_anchors_on_its_interval_when_a_directory_is_set(
        db: Database, scheduler: Scheduler, svc: Services, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    run_id = await _run(db, scheduler, finish=False)
    stop = asyncio.Event()
    engine = asyncio.create_task(run_engine(svc, EngineConfig(
        poll_interval_s=0.05, anchor_dir=tmp_path, anchor_key=KEY, anchor_interval_s=0.05),
        stop))
    try:
        async def anchored() -> bool | None:
            path = tmp_path / anchors.FILE_NAME
            return True if path.exists() and run_id in path.read_text() else None

        await support.wait_for(anchored, timeout=10)
    finally:
        stop.set()
        await engine
    assert await _problems(db, tmp_path) == []


async def test_an_anchor_refuses_a_broken_chain_and_names_it(
        db: Database, scheduler: Scheduler, db_url: str, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    broken = await _run(db, scheduler)
    sound = await _run(db, scheduler)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # as a superuser
        conn.execute("UPDATE warden.timeline SET actor = 'mallory' WHERE run_id = %s"
                     " AND seq = 1", [broken])
    line, runs, refused = await anchors.anchor(db, tmp_path, KEY)
    assert (line, runs) == (1, 1)
    assert [(str(p.run_id), p.seq) for p in refused] == [(broken, 1)]
    assert "hash does not match" in refused[0].problem
    [one] = _lines(tmp_path)
    assert [h["run_id"] for h in one["heads"]] == [sound]  # type: ignore[index]
    # still refused at the next anchor: a broken chain never gets anchored
    assert await anchors.anchor(db, tmp_path, KEY) == (None, 0, refused)
