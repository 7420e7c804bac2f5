"""Retention that keeps the proof (engine/runs/retention.py, docs/dba.md "Partitions and
retention"): whole partitions of finished runs are exported, verified, anchored and dropped;
open runs are never touched; verify names the archived runs as archived; no application
role can drop, detach or delete history. Time moves by the owner-only clock, not by sleep."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from engine.cli.main import _parser, main
from engine.core.errors import ConfigError, Conflict, Forbidden
from engine.core.settings import load
from engine.daemons.serve import EngineConfig, run_engine
from engine.governance import approvals
from engine.runs import anchors, evidence, retention, timeline
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import retention as q
from engine.store.timeline import Head
from tests import support
from tests.db.test_keyed_chain import WORKFLOW
from tests.db.test_rerun_approvals import approve, finished_chain_run, pending_of, rerun, work
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

KEY = anchors.anchor_key(b"s" * 40)
# the open runs wait on a topic no test claims from unless it means to
STAYS_OPEN = WORKFLOW.replace("id: one", "id: open").replace("name: one", "name: open") \
    .replace("t.a", "t.open")


async def _finished(db: Database, scheduler: Scheduler) -> UUID:
    run = await support.start(db, "one")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.a"])
    await support.complete(db, job)
    await support.settle(scheduler)
    return run.run_id


async def _open(db: Database, scheduler: Scheduler) -> UUID:
    await support.store(db, STAYS_OPEN)
    run = await support.start(db, "open")
    await support.settle(scheduler)
    return run.run_id


async def _to_next_month(db: Database) -> None:
    """Moves the database clock to the second day of next month (UTC)."""
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT extract(epoch FROM (date_trunc('month', warden.now() AT TIME ZONE 'UTC')"
            " + interval '1 month 1 day') AT TIME ZONE 'UTC' - warden.now())")
        row = await cur.fetchone()
    assert row is not None
    await support.advance_clock(db, float(row[0]))


async def _scalar(db: Database, query: str, *params: object) -> object:
    async with db.connection() as conn:
        cur = await conn.execute(query, list(params))
        row = await cur.fetchone()
    assert row is not None
    return row[0]


async def _partition_of(db: Database, run_id: UUID) -> set[object]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM warden.timeline WHERE run_id = %s",
            [run_id])
        return {r[0] for r in await cur.fetchall()}


async def _month(db: Database, run_id: UUID) -> str:
    return str(await _scalar(
        db, "SELECT to_char(created_at AT TIME ZONE 'UTC', '\"y\"YYYY\"m\"MM') FROM warden.runs"
        " WHERE run_id = %s", run_id))


async def _created(db: Database, run_id: UUID) -> datetime:
    value = await _scalar(db, "SELECT created_at FROM warden.runs WHERE run_id = %s", run_id)
    assert isinstance(value, datetime)
    return value


async def _cutoff(db: Database, days: int = 90) -> datetime:
    async with db.connection() as conn:
        return await q.now(conn) - timedelta(days=days)


async def test_partitions_exist_ahead_and_a_run_of_a_new_month_lands_in_its_own(
        db: Database, scheduler: Scheduler) -> None:
    ahead = await _scalar(
        db, "SELECT count(*) FROM generate_series(0, 3) AS i WHERE to_regclass("
        "'warden_partitions.timeline_' || to_char((date_trunc('month', warden.now() AT TIME"
        " ZONE 'UTC') + make_interval(months => i)), '\"y\"YYYY\"m\"MM')) IS NOT NULL")
    assert ahead == 4  # this month and the three ahead, made by the migration
    await support.store(db, WORKFLOW)
    for _ in range(5):  # past the months made ahead: the run's insert makes its own
        await _to_next_month(db)
    run_id = await _finished(db, scheduler)
    month = await _month(db, run_id)
    assert await _partition_of(db, run_id) == {f"warden_partitions.timeline_{month}"}
    assert await _scalar(db, "SELECT DISTINCT tableoid::regclass::text FROM "
                         "warden.policy_decisions WHERE run_id = %s", run_id) \
        == f"warden_partitions.policy_decisions_{month}"
    async with db.connection() as conn:
        assert await q.ensure_partitions(conn, 2) == 4  # the two months after it, both tables
        assert await q.ensure_partitions(conn, 2) == 0


async def test_retention_archives_a_finished_month_and_leaves_open_runs_untouched(
        db: Database, db_url: str, scheduler: Scheduler, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    old = await _finished(db, scheduler)
    assert await support.end_unobserved(db, old)  # no serve observed it: its row goes too
    await _to_next_month(db)
    still_open = await _open(db, scheduler)
    anchor_dir, archive_dir = tmp_path / "anchors", tmp_path / "archive"
    assert (await anchors.anchor(db, anchor_dir, KEY)).runs == 2
    await support.advance_clock(db, 200 * 86400)
    recent = await _finished(db, scheduler)

    outcomes = {o.month: o for o in await retention.retain(
        db, cutoff=await _cutoff(db), archive_dir=archive_dir, anchor_dir=anchor_dir,
        key=KEY, by="test", dry_run=False)}
    archived = [o for o in outcomes.values() if o.action == "archived"]
    assert [(o.runs, o.anchor_line) for o in archived] == [(1, 2)]
    old_month = archived[0].month
    open_month = retention.month_name(await _created(db, still_open))
    assert outcomes[open_month].action == "kept"
    assert outcomes[open_month].reason == "1 run(s) still open"
    recent_month = retention.month_name(await _created(db, recent))
    assert outcomes[recent_month].reason == "the month ends after the cutoff"
    assert old_month < open_month < recent_month

    # the old run is gone, whole; the open one is as it was and still moves on
    assert await _scalar(db, "SELECT count(*) FROM warden.runs WHERE run_id = %s", old) == 0
    assert await _scalar(db, "SELECT count(*) FROM warden.steps WHERE run_id = %s", old) == 0
    assert await _scalar(db, "SELECT count(*) FROM warden.jobs WHERE run_id = %s", old) == 0
    assert not await support.end_unobserved(db, old)
    assert await _scalar(db, "SELECT to_regclass(%s)::text",
                         f"warden_partitions.timeline_y{old_month.replace('-', 'm')}") is None
    [job] = await support.claim(db, ["t.open"])
    await support.complete(db, job)
    await support.settle(scheduler)
    assert (await support.detail(db, still_open)).run.status == "succeeded"

    # verify without the anchors: every chain holds, the old run is archived
    checked, broken = await timeline.check(db, None)
    assert (checked, broken) == (2, [])
    async with db.connection() as conn:
        [gone] = await q.archived(conn, None, None)
    assert gone.run_id == old and Path(archive_dir / gone.archive).exists()
    # and with them: nothing differs, and the retention line names the old run
    log = anchors.read(anchor_dir, KEY)
    assert log.problems == [] and await anchors.check(db, log) == []
    assert set(log.retained) == {("default", old)}
    assert log.retained[("default", old)].point.seq == gone.seq

    # the archive verifies offline; one changed byte is caught
    text = (archive_dir / gone.archive).read_text()
    checked_export = evidence.verify_export(text, KEY)
    assert (checked_export.runs, checked_export.problems) == (1, [])
    assert checked_export.anchored == 1  # the head anchored before retention came along
    at = text.index('"actor":"') + len('"actor":"')
    forged = text[:at] + ("X" if text[at] != "X" else "Y") + text[at + 1:]
    assert evidence.verify_export(forged, KEY).problems


async def test_verify_with_anchors_catches_an_archived_run_no_retention_line_names(
        db: Database, scheduler: Scheduler, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    old = await _finished(db, scheduler)
    await support.advance_clock(db, 200 * 86400)
    anchor_dir = tmp_path / "anchors"
    [o] = [o for o in await retention.retain(
        db, cutoff=await _cutoff(db), archive_dir=tmp_path / "archive",
        anchor_dir=anchor_dir, key=KEY, by="test", dry_run=False) if o.action == "archived"]
    # another anchor directory (say, an old copy) has no retention line: the database's
    # own record of the archive is not taken on its word
    other = tmp_path / "other"
    other.mkdir()
    log = anchors.read(other, KEY)
    problems = await anchors.check(db, log)
    assert [(p.run_id, "no retention anchor names it" in p.problem) for p in problems] \
        == [(old, True)]
    assert o.runs == 1


async def test_a_dry_run_changes_nothing(
        db: Database, scheduler: Scheduler, tmp_path: Path) -> None:
    await support.store(db, WORKFLOW)
    old = await _finished(db, scheduler)
    await support.advance_clock(db, 200 * 86400)
    partitions = await _scalar(db, "SELECT count(*) FROM pg_inherits WHERE inhparent ="
                               " 'warden.timeline'::regclass")
    outcomes = await retention.retain(
        db, cutoff=await _cutoff(db), archive_dir=tmp_path / "archive",
        anchor_dir=tmp_path / "anchors", key=KEY, by="test", dry_run=True)
    assert [(o.runs, o.action) for o in outcomes if o.runs] == [(1, "would_archive")]
    assert await _scalar(db, "SELECT count(*) FROM pg_inherits WHERE inhparent ="
                         " 'warden.timeline'::regclass") == partitions
    assert await _scalar(db, "SELECT count(*) FROM warden.runs WHERE run_id = %s", old) == 1
    assert await _scalar(db, "SELECT count(*) FROM warden.archived_runs") == 0
    assert not (tmp_path / "archive").exists() and not (tmp_path / "anchors").exists()


async def test_the_drop_refuses_runs_that_moved_or_are_missing_from_the_export(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, WORKFLOW)
    old = await _finished(db, scheduler)
    await support.advance_clock(db, 200 * 86400)
    cutoff = await _cutoff(db)
    [p] = [p for p in await retention.plan(db, cutoff) if p.runs]
    async with db.connection() as conn:
        [head] = await q.heads(conn, p.month_start, p.month_end)
    moved = Head(head.tenant_id, head.run_id, head.seq - 1, head.hash)
    for runs, problem in (([moved], "its timeline moved on since the export"),
                          ([], "a run of this partition the export lacks")):
        with pytest.raises(Conflict, match=problem):
            async with db.transaction() as conn:
                await q.drop(conn, month_start=p.month_start, cutoff=cutoff, runs=runs,
                             archive="a.jsonl", sha256="0" * 64, by="test")
    assert await _scalar(db, "SELECT count(*) FROM warden.timeline WHERE run_id = %s", old) > 0


ATTACKS = [
    "ALTER TABLE warden.timeline DETACH PARTITION warden_partitions.timeline_{m}",
    "ALTER TABLE warden.policy_decisions DETACH PARTITION "
    "warden_partitions.policy_decisions_{m}",
    "DROP TABLE warden_partitions.timeline_{m}",
    "DELETE FROM warden.timeline",
    "DELETE FROM warden.policy_decisions",
    "TRUNCATE warden.timeline",
    "SELECT * FROM warden_partitions.timeline_{m}",  # around row-level security
    "SELECT warden.create_partitions(now())",
    "SELECT warden.retention_drop(now() - interval '1 year', now() - interval '90 days', "
    "'[]', 'a', repeat('0', 64), 'x')",
    "SELECT * FROM warden.retention_partitions(now())",
    "ALTER TABLE warden.timeline DISABLE TRIGGER timeline_no_update_delete",
]


@pytest.mark.parametrize("statement", ATTACKS)
async def test_no_application_role_can_drop_detach_or_delete_history(
        db: Database, db_url: str, login_roles: LoginRoles, scheduler: Scheduler,
        statement: str) -> None:
    await support.store(db, WORKFLOW)
    run_id = await _finished(db, scheduler)
    month = await _month(db, run_id)
    events = await _scalar(db, "SELECT count(*) FROM warden.timeline")
    for role in (login_roles.engine, login_roles.worker_a, login_roles.auditor):
        with psycopg.connect(as_role(db_url, role), autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET warden.tenant = '*'")
            conn.execute(statement.format(m=month))
    assert await _scalar(db, "SELECT count(*) FROM warden.timeline") == events
    assert await _scalar(db, "SELECT to_regclass(%s)::text",
                         f"warden_partitions.timeline_{month}") is not None


def test_the_engine_role_keeps_partitions_ahead_but_only_within_two_years(
        db_url: str, login_roles: LoginRoles) -> None:
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        row = conn.execute("SELECT warden.ensure_partitions(6)").fetchone()
        assert row is not None and row[0] == 6  # months 4, 5 and 6, of both tables
        with pytest.raises(psycopg.DatabaseError, match="0 to 24"):
            conn.execute("SELECT warden.ensure_partitions(25)")


@pytest.mark.parametrize(("value", "says"), [
    ("90x", "is not an age"), ("12h", "is not an age"), ("", "is not an age"),
    ("-5d", "is not an age"), ("0d", "less than 1d"), ("9999999d", "is not an age"),
    ("36501d", "more than 36500d"),
])
def test_a_bad_older_than_gets_a_precise_error(
        value: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["retention", f"--older-than={value}", "--dry-run"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--older-than" in err and says in err


def test_retention_refuses_a_role_that_does_not_own_the_schema(
        db_url: str, login_roles: LoginRoles, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WARDEN_DATABASE_URL", as_role(db_url, login_roles.engine))
    monkeypatch.setenv("WARDEN_SECRET_KEY", "k" * 40)
    assert main(["retention", "--older-than", "90d", "--dry-run"]) == 5
    assert "may not detach or drop partitions" in capsys.readouterr().err


async def test_a_rerun_of_an_archived_runs_rerun_still_bars_the_archived_runs_starter(
        svc: Services, scheduler: Scheduler, tmp_path: Path) -> None:
    original = await finished_chain_run(svc, scheduler)  # alice started it
    await support.advance_clock(svc.db, 200 * 86400)
    first = await rerun(svc, original.run_id, "b", "olga")
    await support.settle(scheduler)
    await approve(svc, await pending_of(svc, first.run_id), "bob")
    await work(svc, scheduler, ["t.a", "t.b"])
    outcomes = await retention.retain(
        svc.db, cutoff=await _cutoff(svc.db), archive_dir=tmp_path / "archive",
        anchor_dir=tmp_path / "anchors", key=KEY, by="test", dry_run=False)
    assert [o.runs for o in outcomes if o.action == "archived"] == [1]
    assert await _scalar(svc.db, "SELECT count(*) FROM warden.runs WHERE run_id = %s",
                         original.run_id) == 0
    second = await rerun(svc, first.run_id, "b", "dave")
    await support.settle(scheduler)
    asked = await pending_of(svc, second.run_id)
    assert asked.barred == ["alice", "dave", "olga"]
    with pytest.raises(Forbidden):
        await approvals.decide(svc.db, tenant_id="default", approve=True,
                               approval_id=asked.approval_id, principal="alice")


async def _cli(argv: list[str]) -> int:
    """One CLI command in this process (its coroutine, under the test's event loop)."""
    args = _parser().parse_args(argv)
    return int(await args.func(args, load()))


async def test_the_cli_archives_and_verify_names_the_run_archived(
        db: Database, db_url: str, scheduler: Scheduler, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WARDEN_DATABASE_URL", db_url)
    monkeypatch.setenv("WARDEN_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("WARDEN_AUDIT_ANCHOR_DIR", str(tmp_path / "anchors"))
    await support.store(db, WORKFLOW)
    old = await _finished(db, scheduler)
    assert await _cli(["audit", "anchor"]) == 0
    await support.advance_clock(db, 200 * 86400)
    capsys.readouterr()
    assert await _cli(["retention", "--older-than", "13w", "--dry-run"]) == 0
    assert "would archive, 1 run(s)" in capsys.readouterr().out
    assert await _cli(["retention", "--older-than", "90d", "--archive-dir",
                       str(tmp_path / "archive"), "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    [archived] = [p for p in done["partitions"] if p["action"] == "archived"]
    assert (archived["runs"], archived["anchor_line"]) == (1, 2)

    assert await _cli(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ARCHIVED: run {old} (default)" in out and "1 archived" in out
    assert await _cli(["audit", "verify", "--anchors", str(tmp_path / "anchors"),
                       "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["anchors"]["problems"] == []
    assert [(a["run_id"], a["anchor_line"]) for a in doc["archived"]] == [(str(old), 2)]
    assert await _cli(["audit", "verify-export", archived["archive"]]) == 0
    assert "1 run(s)" in capsys.readouterr().out


async def test_retention_without_an_archive_directory_is_refused_and_changes_nothing(
        db: Database, db_url: str, scheduler: Scheduler, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_DATABASE_URL", db_url)
    monkeypatch.setenv("WARDEN_SECRET_KEY", "k" * 40)
    monkeypatch.delenv("WARDEN_RETENTION_ARCHIVE_DIR", raising=False)
    await support.store(db, WORKFLOW)
    old = await _finished(db, scheduler)
    await support.advance_clock(db, 200 * 86400)
    with pytest.raises(ConfigError, match="--archive-dir"):
        await _cli(["retention", "--older-than", "90d", "--anchors", str(tmp_path)])
    assert await _scalar(db, "SELECT count(*) FROM warden.runs WHERE run_id = %s", old) == 1


async def test_serve_keeps_the_months_ahead_partitioned(db: Database, svc: Services) -> None:
    for _ in range(6):  # past what the migration made ahead
        await _to_next_month(db)
    wanted = ("SELECT count(*) FROM generate_series(0, 2) AS i WHERE to_regclass("
              "'warden_partitions.policy_decisions_' || to_char((date_trunc('month', "
              "warden.now() AT TIME ZONE 'UTC') + make_interval(months => i)), "
              "'\"y\"YYYY\"m\"MM')) IS NOT NULL")
    assert await _scalar(db, wanted) == 0
    stop = asyncio.Event()
    engine = asyncio.create_task(run_engine(svc, EngineConfig(
        poll_interval_s=0.05, partition_months_ahead=2, partition_interval_s=0.05), stop))
    try:
        async def made() -> bool | None:
            return True if await _scalar(db, wanted) == 3 else None

        await support.wait_for(made, timeout=10, what="the partitions of the months ahead")
    finally:
        stop.set()
        await engine
