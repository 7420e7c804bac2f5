"""The evidence views (docs/dba.md, "Evidence views"): who approved what, under which
policy, and what ran, as one SELECT; and whether what ran is what was approved."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from engine.governance import approvals
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from tests import support
from tests.db.test_governance import activate, bundle, rule

pytestmark = pytest.mark.anyio

CHANGE = """
id: change
name: a change with a human gate and a gated charge
version: 1.0.0
steps:
  plan: {type: job, topic: ev.plan}
  gate: {type: approval, depends_on: [plan]}
  apply: {type: job, topic: ev.apply, depends_on: [gate]}
  charge: {type: job, topic: ev.charge, depends_on: [gate]}
"""


def _select(url: str, query: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall()


async def _approve(svc: Services, run_id: object, step: str, by: str, reason: str) -> None:
    detail = await support.detail(svc, run_id)  # type: ignore[arg-type]
    [pending] = [a for a in detail.approvals if a.step_id == step and a.status == "pending"]
    await approvals.decide(svc.db, tenant_id="default", approval_id=pending.approval_id,
                           approve=True, principal=by, reason=reason)


async def _change_run(svc: Services, scheduler: Scheduler) -> tuple[str, str]:
    await support.store(svc.db, CHANGE)
    snapshot = await activate(svc, bundle(
        rule("ask-for-money", "require_approval", '{topics: ["ev.charge"]}')))
    run = await support.start(svc, "change", {"ticket": "CHG-1 ✓", "ratio": 0.25, "n": 3})
    await support.settle(scheduler)
    [plan] = await support.claim(svc.db, ["ev.plan"], worker="w-plan")
    await support.complete(svc.db, plan, {"patch": "é\n", "lines": [1, 2], "ok": True})
    await support.settle(scheduler)
    await _approve(svc, run.run_id, "gate", "bob", "patch reviewed")
    await support.settle(scheduler)
    await _approve(svc, run.run_id, "charge", "carol", "within budget")
    await support.settle(scheduler)
    for job in await support.claim(svc.db, ["ev.apply", "ev.charge"], worker="w-2"):
        await support.complete(svc.db, job)
    await support.settle(scheduler)
    return str(run.run_id), snapshot


async def test_who_approved_what_under_which_policy_and_what_ran_is_one_select(
        svc: Services, scheduler: Scheduler, db_url: str) -> None:
    run_id, snapshot = await _change_run(svc, scheduler)
    rows = {r["step_id"]: r for r in _select(db_url, """
        SELECT step_id, job_id, outcome, worker, decisions, approval_kind, approved_by,
               approval_reason, approval_snapshot_hash, approval_matches_what_ran,
               timeline_seqs, run_created_by
          FROM warden.job_evidence WHERE tenant_id = 'default' AND run_id = %s""", run_id)}
    assert set(rows) == {"plan", "apply", "charge"}
    assert {s: (r["outcome"], r["worker"]) for s, r in rows.items()} == {
        "plan": ("succeeded", "w-plan"), "apply": ("succeeded", "w-2"),
        "charge": ("succeeded", "w-2")}
    assert rows["plan"]["approval_kind"] is None
    assert [(d["stage"], d["decision"]) for d in rows["plan"]["decisions"]] == [
        ("submit", "allow"), ("dispatch", "allow")]
    assert (rows["apply"]["approval_kind"], rows["apply"]["approved_by"],
            rows["apply"]["approval_reason"]) == ("step", "bob", "patch reviewed")
    charge = rows["charge"]
    assert (charge["approval_kind"], charge["approved_by"], charge["approval_reason"],
            charge["approval_snapshot_hash"]) == ("policy", "carol", "within budget", snapshot)
    assert [(d["stage"], d["rule"], d["decision"], d["snapshot_hash"])
            for d in charge["decisions"]] == [
        ("submit", "ask-for-money", "require_approval", snapshot),
        ("dispatch", "ask-for-money", "require_approval", snapshot)]
    assert all(r["approval_matches_what_ran"] for s, r in rows.items() if s != "plan")
    assert all(r["run_created_by"] == "alice" for r in rows.values())
    # the seqs point at this attempt's own events
    events = {e.seq: e for e in await support.events(svc.db, charge["job_id"].split(":")[0])}
    assert [events[s].kind for s in charge["timeline_seqs"]][-2:] == [
        "job.claimed", "job.succeeded"]
    assert {events[s].job_id for s in charge["timeline_seqs"]} == {charge["job_id"]}


async def test_approval_evidence_tells_when_what_ran_is_not_what_was_approved(
        svc: Services, scheduler: Scheduler, db_url: str) -> None:
    run_id, snapshot = await _change_run(svc, scheduler)
    query = """SELECT step_id, kind, status, requested_by, decided_by, reason,
                      policy_snapshot_hash, policy_activated_by, approved_job_hash,
                      current_job_hash, job_hash_matches, requested_seq, decided_seq
                 FROM warden.approval_evidence WHERE tenant_id = 'default' AND run_id = %s
                ORDER BY requested_at"""
    gate, charge = _select(db_url, query, run_id)
    assert (gate["kind"], gate["decided_by"], charge["kind"], charge["decided_by"]) == (
        "step", "bob", "policy", "carol")
    for row in (gate, charge):
        assert row["requested_by"] == "alice" and row["status"] == "approved"
        assert row["policy_snapshot_hash"] == snapshot and row["policy_activated_by"] == "admin"
        assert row["job_hash_matches"] and row["approved_job_hash"] == row["current_job_hash"]
        assert 0 < row["requested_seq"] < row["decided_seq"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE warden.jobs SET input = input || '{\"amount\": 1000000}'"
                     " WHERE run_id = %s AND step_id = 'charge'", [run_id])
        conn.execute("UPDATE warden.steps SET output = '{\"patch\": \"rm -rf /\"}'"
                     " WHERE run_id = %s AND step_id = 'plan'", [run_id])
    assert [r["job_hash_matches"] for r in _select(db_url, query, run_id)] == [False, False]
    [(matches,)] = [tuple(r.values()) for r in _select(
        db_url, "SELECT approval_matches_what_ran FROM warden.job_evidence"
        " WHERE run_id = %s AND step_id = 'charge'", run_id)]
    assert matches is False


async def test_a_tenant_over_a_time_range_is_one_select_too(
        svc: Services, scheduler: Scheduler, db_url: str) -> None:
    run_id, _ = await _change_run(svc, scheduler)
    rows = _select(db_url, """
        SELECT run_id::text, step_id, approved_by FROM warden.job_evidence
         WHERE tenant_id = 'default' AND created_at >= now() - interval '1 hour'
           AND created_at < now() + interval '1 hour' AND approved_by IS NOT NULL
         ORDER BY step_id""")
    assert [(r["run_id"], r["step_id"], r["approved_by"]) for r in rows] == [
        (run_id, "apply", "bob"), (run_id, "charge", "carol")]


async def test_policy_activations_say_who_when_and_whether_the_bundle_is_intact(
        svc: Services, db_url: str) -> None:
    first = await activate(svc, bundle(rule("one", "allow")))
    second = await activate(svc, bundle(rule("two", "deny")))
    rows = _select(db_url, """
        SELECT snapshot_hash, previous_hash, activated_by, rules, default_decision,
               snapshot_intact, replaced_at IS NOT NULL AS replaced, active_now
          FROM warden.policy_activation_evidence WHERE tenant_id = 'default'
         ORDER BY activation_id""")
    assert [(r["snapshot_hash"], r["previous_hash"], r["replaced"], r["active_now"])
            for r in rows] == [(first, None, True, False), (second, first, False, True)]
    assert all(r["activated_by"] == "admin" and r["snapshot_intact"] and r["rules"] == 1
               for r in rows)
