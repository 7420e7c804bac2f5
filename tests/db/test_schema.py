"""The migrated schema: enums, records, migrations, and the append-only timeline."""

from __future__ import annotations

import dataclasses
from enum import StrEnum

import psycopg
import pytest

from engine.core.enums import (
    ApprovalStatus,
    JobStatus,
    NotificationStatus,
    RunStatus,
    StepStatus,
    StepType,
)
from engine.governance.apikeys import Role
from engine.governance.policy import Verdict
from engine.scheduling.scheduler import Scheduler
from engine.store import Database, migrate, records
from tests import support

pytestmark = pytest.mark.anyio

ENUMS: list[tuple[str, type[StrEnum]]] = [
    ("warden.run_status", RunStatus), ("warden.step_status", StepStatus),
    ("warden.job_status", JobStatus), ("warden.approval_status", ApprovalStatus),
    ("warden.step_type", StepType), ("warden.policy_decision", Verdict),
    ("warden.api_role", Role), ("warden.notification_status", NotificationStatus),
]

TABLE_RECORDS = [
    ("workflows", records.WorkflowRow), ("runs", records.RunRow), ("steps", records.StepRow),
    ("jobs", records.JobRow), ("approvals", records.ApprovalRow),
    ("notifications", records.NotificationRow), ("timeline", records.TimelineEvent),
    ("policy_active", records.PolicyActiveRow), ("policy_activations", records.PolicyActivationRow),
    ("policy_decisions", records.PolicyDecisionRow), ("api_keys", records.ApiKeyRow),
    ("step_items", records.ItemRow),
    ("schedules", records.ScheduleRow), ("schedule_ticks", records.ScheduleTickRow),
]


@pytest.mark.parametrize(("pg_type", "py_enum"), ENUMS)
def test_python_enums_mirror_postgres_enums(db_url: str, pg_type: str,
                                            py_enum: type[StrEnum]) -> None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(f"SELECT enum_range(NULL::{pg_type})::text[]").fetchone()
    assert row is not None
    assert row[0] == [member.value for member in py_enum]


@pytest.mark.parametrize(("table", "record"), TABLE_RECORDS)
def test_records_mirror_their_tables_column_for_column(db_url: str, table: str,
                                                       record: type) -> None:
    with psycopg.connect(db_url) as conn:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'warden' "
            "AND table_name = %s ORDER BY ordinal_position", [table]).fetchall()]
    assert columns == [f.name for f in dataclasses.fields(record)]


def test_timeline_kinds_are_exactly_the_documented_ones(db_url: str) -> None:
    documented = [
        "run.created", "run.started", "run.waiting", "run.resumed", "run.succeeded",
        "run.failed", "run.denied", "run.cancelled", "run.timed_out", "run.rerun",
        "policy.decision", "step.ready", "step.skipped", "job.dispatched", "job.claimed",
        "job.checkpointed", "job.succeeded", "job.failed", "job.retry_scheduled",
        "job.timed_out", "job.cancelled", "approval.requested", "approval.approved",
        "approval.rejected", "approval.expired", "approval.superseded", "notify.sent",
        "reconciler.repaired",
        "step.condition", "timer.started", "timer.fired", "wait.started", "wait.matched",
        "wait.timed_out", "step.failed",
        "foreach.expanded", "foreach.ended", "child.started", "child.ended",
    ]
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT enum_range(NULL::warden.timeline_kind)::text[]").fetchone()
    assert row is not None and row[0] == documented


def test_migrations_upgrade_downgrade_and_upgrade_again(empty_db_url: str) -> None:
    assert migrate.current_revision(empty_db_url) is None
    with pytest.raises(Exception, match="warden migrate"):
        migrate.require_head(empty_db_url)
    migrate.upgrade(empty_db_url)
    assert migrate.current_revision(empty_db_url) == migrate.head_revision()
    migrate.require_head(empty_db_url)
    migrate.downgrade(empty_db_url, "base")
    with psycopg.connect(empty_db_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'warden'")
        assert row.fetchone() == (0,)
    migrate.upgrade(empty_db_url)
    migrate.require_head(empty_db_url)


def test_the_ends_not_yet_observed_survive_the_move_to_run_ends_and_back(
        empty_db_url: str) -> None:
    """0031 moves the end_unobserved flags into warden.run_ends, and its downgrade moves
    them back: an end no serve had observed when the schema changed is still observed
    once after it (nothing stored is lost either way)."""
    migrate.upgrade(empty_db_url, "0030_one_run_update")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO warden.workflows (tenant_id, workflow_id, version, version_major, "
            "version_minor, version_patch, name, definition, digest, source, created_by) "
            "VALUES ('t', 'one', '1.0.0', 1, 0, 0, 'one', '{}', 'd', '', 'author')")
        conn.execute(
            "INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, status, "
            "request_digest, created_by, started_at, finished_at, needs_scheduling, "
            "end_unobserved) SELECT 't', 'one', '1.0.0', 'succeeded', 'd', 'a', now(), "
            "now() - make_interval(secs => n), false, n = 2 FROM generate_series(1, 3) n")
        [(unobserved, ended_at)] = conn.execute(
            "SELECT run_id, finished_at FROM warden.runs WHERE end_unobserved").fetchall()
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT tenant_id, run_id, finished_at FROM warden.run_ends"
                            ).fetchall() == [("t", unobserved, ended_at)]
    migrate.downgrade(empty_db_url, "0030_one_run_update")
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT run_id FROM warden.runs WHERE end_unobserved"
                            ).fetchall() == [(unobserved,)]
        assert conn.execute("SELECT count(*) FROM warden.runs").fetchone() == (3,)


def test_a_newer_schema_is_refused_with_a_clear_message(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("UPDATE warden_alembic_version SET version_num = '9999_future'")
    with pytest.raises(Exception, match="newer than this Warden"):
        migrate.require_head(empty_db_url)


async def _finished_run(db: Database, scheduler: Scheduler) -> str:
    await support.store(db, """
id: one
name: one
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
""")
    run = await support.start(db, "one")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.a"])
    await support.complete(db, job)
    await support.settle(scheduler)
    return str(run.run_id)


@pytest.mark.parametrize("statement", [
    "UPDATE warden.timeline SET actor = 'mallory'",
    "DELETE FROM warden.timeline WHERE seq = 2",
    "TRUNCATE warden.timeline",
])
async def test_timeline_refuses_update_delete_and_truncate(
        db: Database, scheduler: Scheduler, db_url: str, statement: str) -> None:
    run_id = await _finished_run(db, scheduler)
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.Error, match="append-only"):
        conn.execute(statement)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT warden.verify_timeline(%s)", [run_id]).fetchone() == (True,)


@pytest.mark.parametrize("tamper", [
    "UPDATE warden.timeline SET actor = 'mallory' WHERE seq = 3",
    "UPDATE warden.timeline SET data = '{\"forged\": true}' WHERE seq = 2",
    "DELETE FROM warden.timeline WHERE seq = 3",
    "DELETE FROM warden.timeline WHERE seq = (SELECT max(seq) FROM warden.timeline)",
    "UPDATE warden.timeline SET at = at + interval '1 second' WHERE seq = 4",
])
async def test_tampering_with_triggers_disabled_is_caught(
        db: Database, scheduler: Scheduler, db_url: str, tamper: str) -> None:
    run_id = await _finished_run(db, scheduler)
    with psycopg.connect(db_url, autocommit=True) as conn:
        # a superuser can switch the triggers off; the hash chain still tells
        conn.execute("SET session_replication_role = replica")
        conn.execute(tamper)
        conn.execute("SET session_replication_role = origin")
        assert conn.execute("SELECT warden.verify_timeline(%s)", [run_id]).fetchone() == (False,)


def test_the_fast_schema_check_knows_the_real_head() -> None:
    assert migrate.head_revision() == migrate.HEAD
