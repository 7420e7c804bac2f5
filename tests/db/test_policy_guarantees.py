"""Governance guarantees the suite did not test before issue 10: a fresh install denies by
default, a retry is judged again at dispatch under the policy active then, and the
decision, activation and snapshot tables refuse UPDATE, DELETE and TRUNCATE."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from engine.cli.common import services_for
from engine.core import settings as settings_mod
from engine.core.enums import ApprovalStatus, JobStatus, RunStatus, StepStatus
from engine.core.errors import PolicyDenied
from engine.core.resources import data_dir
from engine.governance import decisions
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support

pytestmark = pytest.mark.anyio

PAY = """
id: pay
name: payments
version: 1.0.0
steps:
  quote: {type: job, topic: pay.quote}
  charge:
    type: job
    topic: pay.charge
    depends_on: [quote]
    retries: {max_attempts: 3, backoff_ms: 0}
"""


async def activate(db: Database, source: str) -> str:
    stored = await decisions.store_bundle(db, tenant_id="default", source=source,
                                          media_type=None, created_by="admin")
    await decisions.activate(db, tenant_id="default", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")
    return stored.row.snapshot_hash


async def rows(db: Database, query: str, *params: Any) -> list[tuple[Any, ...]]:
    async with db.connection() as conn:
        cur = await conn.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()


# ---------------------------------------------------------------- a fresh install

async def test_a_fresh_install_denies_at_submit_and_at_dispatch(empty_db_url: str) -> None:
    """`warden migrate` on an empty database, then the settings of an unconfigured
    installation: no policy is active, and the default is deny at both gates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
    env["WARDEN_DATABASE_URL"] = empty_db_url
    migrated = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "engine.cli", "migrate"], env=env,
        capture_output=True, text=True, timeout=120, cwd=data_dir("sql").parent)
    assert migrated.returncode == 0, migrated.stderr
    settings = settings_mod.load({"WARDEN_DATABASE_URL": empty_db_url})
    assert settings.policy_default == "deny"
    async with Database(empty_db_url, max_size=4) as db:
        assert await rows(db, "SELECT count(*) FROM warden.policy_active") == [(0,)]
        installed = services_for(db, settings)  # what `warden serve` and the CLI build
        await support.store(db, PAY)
        with pytest.raises(PolicyDenied, match="no policy is active"):
            await support.start(installed, "pay", {"amount": 1})
        assert await rows(db, "SELECT stage::text, decision::text, snapshot_hash "
                              "FROM warden.policy_decisions") == [("submit", "deny", None)] * 2
        # A run let in by a process configured to allow (WARDEN_POLICY_DEFAULT=allow) is
        # still judged at dispatch by the unconfigured one, and denied there.
        lenient = Services.create(db, policy_default=Verdict.ALLOW)
        run = await support.start(lenient, "pay", {"amount": 1})
        await support.settle(Scheduler(installed))
        assert await support.claim(db, ["pay.quote", "pay.charge"]) == []
        detail = await support.detail(db, run.run_id)
        assert detail.run.status is RunStatus.DENIED
        assert [(j.job_id, j.status) for j in detail.jobs] == [
            (f"{run.run_id}:quote@1", JobStatus.DENIED)]
        assert await rows(db, "SELECT decision::text, snapshot_hash, reason FROM "
                              "warden.policy_decisions WHERE run_id = %s AND stage = 'dispatch'",
                          run.run_id) == [
            ("deny", None, "no policy is active for this tenant (default: deny)")]


# ---------------------------------------------------------------- retries

@pytest.mark.parametrize("second", [Verdict.DENY, Verdict.REQUIRE_APPROVAL])
async def test_a_retry_is_judged_again_under_the_policy_active_at_its_dispatch(
        db: Database, second: Verdict) -> None:
    gov = Services.create(db, policy_default=Verdict.DENY, approval_expires_ms=60_000)
    scheduler = Scheduler(gov)
    await support.store(db, PAY)
    first = await activate(db, "default_decision: allow\nrules: []\n")
    run = await support.start(gov, "pay", {"amount": 10})
    await support.settle(scheduler)
    [quote] = await support.claim(db, ["pay.quote"])
    await support.complete(db, quote)
    await support.settle(scheduler)
    [attempt1] = await support.claim(db, ["pay.charge"])
    await support.fail(db, attempt1)  # retryable: attempt 2 is due, not yet dispatched
    newer = await activate(db, "default_decision: allow\nrules:\n"
                               f"  - {{name: second, match: {{topics: [pay.charge]}}, "
                               f"decision: {second.value}, reason: changed}}\n")
    await support.settle(scheduler)
    job1, job2 = f"{run.run_id}:charge@1", f"{run.run_id}:charge@2"
    assert await rows(db, "SELECT job_id, snapshot_hash, decision::text, rule FROM "
                          "warden.policy_decisions WHERE run_id = %s AND step_id = 'charge' "
                          "AND stage = 'dispatch' ORDER BY decision_id", run.run_id) == [
        (job1, first, "allow", None), (job2, newer, second.value, "second")]
    assert await support.claim(db, ["pay.charge"]) == []
    detail = await support.detail(db, run.run_id)
    charges = [(j.job_id, j.status, j.policy_snapshot_hash) for j in detail.jobs
               if j.step_id == "charge"]
    if second is Verdict.DENY:
        assert charges == [(job1, JobStatus.FAILED, first), (job2, JobStatus.DENIED, newer)]
        assert detail.steps[1].status is StepStatus.DENIED
        assert detail.run.status is RunStatus.DENIED
    else:
        assert charges == [(job1, JobStatus.FAILED, first), (job2, JobStatus.BLOCKED, newer)]
        [approval] = detail.approvals
        assert (approval.job_id, approval.policy_snapshot_hash, approval.status) == (
            job2, newer, ApprovalStatus.PENDING)
        assert detail.run.status is RunStatus.WAITING


# ---------------------------------------------------------------- append-only

REFUSED = [
    ("policy_decisions", "UPDATE warden.policy_decisions SET decision = 'allow'"),
    ("policy_decisions", "DELETE FROM warden.policy_decisions"),
    ("policy_decisions", "TRUNCATE warden.policy_decisions"),
    ("policy_activations", "UPDATE warden.policy_activations SET activated_by = 'mallory'"),
    ("policy_activations", "DELETE FROM warden.policy_activations"),
    ("policy_activations", "TRUNCATE warden.policy_activations"),
    ("policy_snapshots", "UPDATE warden.policy_snapshots SET bundle = '{}'"),
    ("policy_snapshots", "DELETE FROM warden.policy_snapshots"),
    # policy_active references the snapshots: without CASCADE the foreign key refuses the
    # TRUNCATE before any trigger is asked; with it, the snapshots' own trigger refuses
    ("policy_snapshots", "TRUNCATE warden.policy_snapshots CASCADE"),
]

CONTENTS = """
SELECT (SELECT json_agg(d ORDER BY decision_id) FROM warden.policy_decisions d)::text,
       (SELECT json_agg(a ORDER BY activation_id) FROM warden.policy_activations a)::text,
       (SELECT json_agg(s ORDER BY snapshot_hash) FROM warden.policy_snapshots s)::text"""


@pytest.mark.parametrize(("table", "statement"), REFUSED)
async def test_decisions_activations_and_snapshots_refuse_update_delete_and_truncate(
        db: Database, db_url: str, table: str, statement: str) -> None:
    gov = Services.create(db, policy_default=Verdict.DENY)
    await support.store(db, PAY)
    await activate(db, "default_decision: allow\nrules: []\n")
    await activate(db, "default_decision: allow\nrules:\n"
                       "  - {name: no-charges, match: {topics: [pay.charge]}, decision: allow, "
                       "reason: fine}\n")
    await support.start(gov, "pay", {"amount": 1})
    await support.settle(Scheduler(gov))
    with psycopg.connect(db_url) as conn:
        before = conn.execute(CONTENTS).fetchone()
        assert before is not None and None not in before  # each table holds rows
        with pytest.raises(psycopg.Error,
                           match=f"warden.{table} is append-only: .* refused") as refused:
            conn.execute(statement)
        assert refused.value.sqlstate == "WD010"
        conn.rollback()
        assert conn.execute(CONTENTS).fetchone() == before
