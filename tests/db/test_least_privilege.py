"""Least privilege at the SQL level (docs/security.md), against real PostgreSQL with the
four roles: each attack of the issue that opened this work now does no harm, and the
positive paths still work for exactly the roles that should have them."""

from __future__ import annotations

import json
import threading
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from engine.core.enums import JobStatus, RunStatus
from engine.governance import approvals, decisions
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

TWO_STEPS = """
id: two
name: two
version: 1.0.0
steps:
  a: {type: job, topic: t.work}
  gate: {type: approval, depends_on: [a]}
  b: {type: job, topic: t.work, depends_on: [gate]}
"""


def connect(db_url: str, role: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(as_role(db_url, role), autocommit=True)


def grant(db_url: str, role: str, tenant: str, topic: str = "*") -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                     "granted_by) VALUES (%s, %s, %s, 'test')", [role, tenant, topic])


async def two_tenants(db: Database) -> dict[str, Any]:
    """A run of `two` in tenants t1 and t2, each with job `a` claimable."""
    runs = {}
    for tenant in ("t1", "t2"):
        await support.store(db, TWO_STEPS, tenant=tenant)
        runs[tenant] = await support.start(db, "two", {"secret": f"{tenant}-input"},
                                           tenant=tenant)
    await support.settle(Scheduler(support.services(db)))
    return runs


def claim(conn: psycopg.Connection[tuple[Any, ...]], n: int = 10) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT tenant_id, job_id, lease_token, input FROM "
                        "warden.claim_jobs(ARRAY['t.work'], 'w', %s, interval '1 minute')",
                        [n]).fetchall()


# ---------------------------------------------------------------- the worker role

@pytest.mark.parametrize("statement", [
    "SELECT tenant_id, input FROM warden.runs",
    "SELECT * FROM warden.jobs",
    "SELECT * FROM warden.timeline",
    "UPDATE warden.steps SET status = 'succeeded' WHERE step_id = 'gate'",
    "UPDATE warden.approvals SET status = 'approved'",
    "INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, granted_by) "
    "VALUES (session_user, '*', '*', 'me')",
    "SELECT warden.append_event('t2', gen_random_uuid(), 'approval.approved', 'gate', NULL, "
    "NULL, 'mallory', '{}')",
    "SELECT warden.wake_run('t2', gen_random_uuid())",
    "SELECT warden.reap_expired_jobs(10)",
    "SELECT warden.now()",
    # whose grants cover what is not a worker's to ask, for itself or another role
    "SELECT warden.granted_to('someone_else', 't1', 't.work')",
    "SELECT warden.granted('t1', 't.work')",
])
async def test_a_worker_role_has_no_table_privilege_and_no_other_function(
        db_url: str, login_roles: LoginRoles, statement: str) -> None:
    with connect(db_url, login_roles.worker_a) as conn, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement)


async def test_a_worker_claims_only_the_tenants_it_is_granted(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    with connect(db_url, login_roles.worker_a) as conn:
        assert claim(conn) == []  # no grant: nothing
    grant(db_url, login_roles.worker_a, "t1")
    with connect(db_url, login_roles.worker_a) as conn:
        claimed = claim(conn)
    assert [(tenant, job_input) for tenant, _, _, job_input in claimed] == [
        ("t1", {"secret": "t1-input"})]
    # t2's job is still there for a role granted it
    grant(db_url, login_roles.worker_b, "t2", "t.*")
    with connect(db_url, login_roles.worker_b) as conn:
        assert [row[0] for row in claim(conn)] == ["t2"]


async def test_a_worker_cannot_write_to_a_job_of_a_tenant_it_is_not_granted(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1")
    grant(db_url, login_roles.worker_b, "t2")
    with connect(db_url, login_roles.worker_b) as conn:
        [(_, job_id, token, _)] = claim(conn)  # t2's job, and its lease token
    with connect(db_url, login_roles.worker_a) as conn:
        for call, args in [
                ("SELECT warden.complete_job(%s, %s, '{\"forged\": true}')", [job_id, token]),
                ("SELECT warden.heartbeat_job(%s, %s, interval '1 hour', '{\"cp\": 1}')",
                 [job_id, token]),
                ("SELECT warden.fail_job(%s, %s, '{}', false)", [job_id, token]),
                ("SELECT warden.release_job(%s, %s, 'x')", [job_id, token])]:
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(call, args)
            assert refused.value.sqlstate == "WD003"  # not even its existence is told
        [(outcome,)] = conn.execute(
            "SELECT outcome FROM warden.complete_jobs(ARRAY[%s], ARRAY[%s::uuid], "
            "ARRAY['{}'::jsonb])", [job_id, token]).fetchall()
        assert outcome == "not_found"
    [job] = [j for j in (await support.detail(db, runs["t2"].run_id)).jobs
             if j.job_id == job_id]
    assert (job.status.value, job.result, job.checkpoint) == ("running", None, None)


# ---------------------------------------------------------------- leases and grants
# A lease carries the login role it was handed to (jobs.lease_role), and the fence lets
# only that role write (warden.lease_held_at); taking a grant back ends the leases it alone
# covered (warden.end_ungranted_leases), and claims and grant changes are ordered by the
# grants lock (sql/functions/claim_jobs.sql).

def lease_ended(db_url: str, job_id: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as admin:
        row = admin.execute("SELECT status::text, lease_expires_at <= warden.now() "
                            "FROM warden.jobs WHERE job_id = %s", [job_id]).fetchone()
    assert row is not None and row[0] == "running"
    return bool(row[1])


def complete(db_url: str, role: str, job_id: str, token: UUID) -> str:
    """complete_jobs' outcome for one job, written as `role`."""
    with connect(db_url, role) as conn:
        [(outcome,)] = conn.execute(
            "SELECT outcome FROM warden.complete_jobs(ARRAY[%s], ARRAY[%s::uuid], "
            "ARRAY['{}'::jsonb])", [job_id, token]).fetchall()
    return str(outcome)


def in_a_thread(db_url: str, role: str, statement: str,
                params: list[Any]) -> tuple[threading.Thread, list[Any]]:
    """Runs `statement` as `role` in a thread of its own, autocommit. Returns the thread
    and a list that gets the backend's pid, then the statement's rows."""
    out: list[Any] = []

    def run() -> None:
        with psycopg.connect(as_role(db_url, role) if role else db_url,
                             autocommit=True) as conn:
            out.append(conn.info.backend_pid)
            out.append(conn.execute(statement, params).fetchall())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


async def waits_for(db_url: str, out: list[Any], holder: int) -> None:
    """Until the thread's backend (its pid first in `out`) waits on `holder`'s lock."""
    async def blocked() -> bool:
        if not out:
            return False
        with psycopg.connect(db_url, autocommit=True) as admin:
            row = admin.execute("SELECT %s = ANY (pg_blocking_pids(%s))",
                                [holder, out[0]]).fetchone()
        return bool(row and row[0])

    await support.wait_for(blocked, timeout=10, what=f"backend {out[:1]} to wait on {holder}")


async def test_a_revoked_grant_ends_the_lease_it_already_holds(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1")
    with connect(db_url, login_roles.worker_a) as conn:
        [(_, job_id, token, _)] = claim(conn)
    assert not lease_ended(db_url, job_id)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("DELETE FROM warden.worker_grants WHERE role_name = %s",
                      [login_roles.worker_a])
    assert lease_ended(db_url, job_id)  # at once, not when the minute's lease runs out
    with connect(db_url, login_roles.worker_a) as conn, pytest.raises(psycopg.Error) as fenced:
        conn.execute("SELECT warden.complete_job(%s, %s, '{}')", [job_id, token])
    assert fenced.value.sqlstate == "WD003"
    # the reaper takes the attempt back now, for a worker still granted it
    with psycopg.connect(db_url, autocommit=True) as admin:
        assert admin.execute("SELECT warden.reap_expired_jobs(10)").fetchone() == (1,)
        assert admin.execute("SELECT status::text FROM warden.jobs WHERE job_id = %s",
                             [job_id]).fetchone() == ("timed_out",)


async def test_a_lease_still_covered_by_another_grant_outlives_a_revoke(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1")
    grant(db_url, login_roles.worker_a, "*", "t.w*")
    grant(db_url, login_roles.worker_b, "t2")
    with connect(db_url, login_roles.worker_a) as conn:
        claimed = {tenant: (job_id, token) for tenant, job_id, token, _ in claim(conn)}
    assert sorted(claimed) == ["t1", "t2"]
    with psycopg.connect(db_url, autocommit=True) as admin:
        # another role's grant, and one of worker_a's two grants of t1's job
        admin.execute("DELETE FROM warden.worker_grants WHERE role_name = %s",
                      [login_roles.worker_b])
        admin.execute("DELETE FROM warden.worker_grants WHERE role_name = %s "
                      "AND tenant_id = 't1'", [login_roles.worker_a])
        # narrowed, still matching t.work
        admin.execute("UPDATE warden.worker_grants SET topic_glob = 't.wo*' "
                      "WHERE role_name = %s", [login_roles.worker_a])
    assert not lease_ended(db_url, claimed["t1"][0])
    assert not lease_ended(db_url, claimed["t2"][0])
    with psycopg.connect(db_url, autocommit=True) as admin:
        # narrowed past it
        admin.execute("UPDATE warden.worker_grants SET topic_glob = 't.other' "
                      "WHERE role_name = %s", [login_roles.worker_a])
    assert lease_ended(db_url, claimed["t1"][0]) and lease_ended(db_url, claimed["t2"][0])


async def test_a_truncate_of_the_grants_ends_every_lease(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "*")
    with connect(db_url, login_roles.worker_a) as conn:
        job_ids = [job_id for _, job_id, _, _ in claim(conn)]
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("TRUNCATE warden.worker_grants")
    assert len(job_ids) == 2 and all(lease_ended(db_url, j) for j in job_ids)


async def test_a_granted_role_cannot_write_with_another_roles_lease(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1")
    grant(db_url, login_roles.worker_b, "t1")
    with connect(db_url, login_roles.worker_a) as conn:
        [(_, job_id, token, _)] = claim(conn)
    # worker_b may work on t1's jobs, and learns the job exists; the lease is not its own
    assert complete(db_url, login_roles.worker_b, job_id, token) == "lease_lost"
    with connect(db_url, login_roles.worker_b) as conn, pytest.raises(psycopg.Error) as fenced:
        conn.execute("SELECT warden.heartbeat_job(%s, %s, interval '1 hour')",
                     [job_id, token])
    assert fenced.value.sqlstate == "WD001"
    assert complete(db_url, login_roles.worker_a, job_id, token) == "completed"


async def test_a_revoke_waits_for_a_claim_in_flight_and_ends_its_lease(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    """The claim read the grant before the revoke; its lease ends once it commits."""
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1")
    with connect(db_url, login_roles.worker_a) as conn:
        with conn.transaction():
            [(_, job_id, token, _)] = claim(conn)
            revoker, revoked = in_a_thread(
                db_url, "", "DELETE FROM warden.worker_grants WHERE role_name = %s "
                "RETURNING role_name", [login_roles.worker_a])
            await waits_for(db_url, revoked, conn.info.backend_pid)
        revoker.join(10)
    assert len(revoked) == 2 and lease_ended(db_url, job_id)
    assert complete(db_url, login_roles.worker_a, job_id, token) == "not_found"


async def test_a_claim_during_a_revoke_waits_and_reads_the_grants_it_leaves(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1")
    with psycopg.connect(db_url) as admin:  # one transaction, open until the commit below
        admin.execute("DELETE FROM warden.worker_grants WHERE role_name = %s",
                      [login_roles.worker_a])
        claimer, claimed = in_a_thread(
            db_url, login_roles.worker_a,
            "SELECT job_id FROM warden.claim_jobs(ARRAY['t.work'], 'w', 10, "
            "interval '1 minute')", [])
        await waits_for(db_url, claimed, admin.info.backend_pid)
        admin.commit()
    claimer.join(10)
    assert claimed[1:] == [[]]


async def test_a_lease_handed_out_before_the_role_was_recorded_is_fenced_by_the_grants(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    """jobs.lease_role NULL: a lease from before migration 0041."""
    await two_tenants(db)
    grant(db_url, login_roles.worker_a, "*")
    with connect(db_url, login_roles.worker_a) as conn:
        claimed = {tenant: (job_id, token) for tenant, job_id, token, _ in claim(conn)}
    with psycopg.connect(db_url) as admin:
        admin.execute("UPDATE warden.jobs SET lease_role = NULL WHERE status = 'running'")
        admin.execute("DELETE FROM warden.worker_grants WHERE role_name = %s",
                      [login_roles.worker_a])
        admin.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                      "granted_by) VALUES (%s, 't1', '*', 'test')", [login_roles.worker_a])
    assert not lease_ended(db_url, claimed["t2"][0])  # the change ends no such lease ...
    assert complete(db_url, login_roles.worker_a, *claimed["t2"]) == "not_found"  # ... the
    assert complete(db_url, login_roles.worker_a, *claimed["t1"]) == "completed"  # fence does


async def test_a_granted_sql_worker_claims_checkpoints_and_completes(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    grant(db_url, login_roles.worker_a, "t1", "t.wo?k")
    with connect(db_url, login_roles.worker_a) as conn:
        [(_, job_id, token, _)] = claim(conn)
        conn.execute("SELECT warden.heartbeat_job(%s, %s, interval '1 minute', "
                     "'{\"page\": 3}')", [job_id, token])
        conn.execute("SELECT warden.complete_job(%s, %s, '{\"done\": true}')", [job_id, token])
    await support.settle(Scheduler(support.services(db)))
    detail = await support.detail(db, runs["t1"].run_id)
    assert detail.steps[0].output == {"done": True}
    assert detail.jobs[0].checkpoint == {"page": 3}
    events = await support.events(db, runs["t1"].run_id, tenant="t1")
    assert "job.checkpointed" in [e.kind for e in events]


async def test_the_forged_approval_of_another_tenant_does_nothing(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    """The attack that opened this work: a worker skips another tenant's approval gate by
    writing the event, the step and the wake-up itself. Every write is refused, and the
    gated step never runs."""
    runs = await two_tenants(db)
    grant(db_url, login_roles.worker_a, "*")
    with connect(db_url, login_roles.worker_a) as conn:
        for _, job_id, token, _ in claim(conn):
            conn.execute("SELECT warden.complete_job(%s, %s, '{}')", [job_id, token])
    scheduler = Scheduler(support.services(db))
    await support.settle(scheduler)
    victim = runs["t2"].run_id
    with connect(db_url, login_roles.worker_a) as conn:
        for attack in [
                "SELECT warden.append_event('t2', %s, 'approval.approved', 'gate', NULL, NULL, "
                "'mallory', '{}')",
                "UPDATE warden.steps SET status = 'succeeded' WHERE run_id = %s "
                "AND step_id = 'gate'",
                "SELECT warden.wake_run('t2', %s)"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(attack, [victim])
    await support.settle(scheduler)
    detail = await support.detail(db, victim)
    assert detail.run.status is RunStatus.WAITING
    assert [a.status.value for a in detail.approvals] == ["pending"]
    with connect(db_url, login_roles.worker_a) as conn:
        assert claim(conn) == []  # b is still behind its gate


# ---------------------------------------------------------------- the engine role

@pytest.mark.parametrize("statement", [
    "UPDATE warden.timeline SET actor = 'mallory'",
    "DELETE FROM warden.timeline",
    "TRUNCATE warden.timeline",
    "INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, prev_hash, hash) "
    "SELECT tenant_id, run_id, 99, now(), 'run.succeeded', 'x', 'y' FROM warden.runs",
    "UPDATE warden.policy_decisions SET decision = 'allow'",
    "DELETE FROM warden.policy_decisions",
    "UPDATE warden.policy_snapshots SET bundle = '{}'",
    "DELETE FROM warden.policy_activations",
    "UPDATE warden.runs SET timeline_hash = repeat('0', 64)",
    "UPDATE warden.approvals SET requested_by = 'nobody'",
    "UPDATE warden.jobs SET result = '{\"forged\": true}'",
    "ALTER TABLE warden.timeline DISABLE TRIGGER ALL",
    "ALTER TABLE warden.runs DISABLE ROW LEVEL SECURITY",
    "DROP TABLE warden.timeline",
    "INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, granted_by) "
    "VALUES ('x', '*', '*', 'me')",
    # taking grants back ends their leases: the owner's alone to do
    "DELETE FROM warden.worker_grants",
    "TRUNCATE warden.worker_grants",
    # a lease is its claiming role's: nobody hands it to another role
    "UPDATE warden.jobs SET lease_role = session_user",
    "INSERT INTO warden.clock (shift) VALUES (interval '1 day')",
])
async def test_the_engine_role_only_appends_to_the_audit_records_and_owns_nothing(
        db: Database, db_url: str, login_roles: LoginRoles, statement: str) -> None:
    await two_tenants(db)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SET warden.tenant = '*'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


async def test_row_level_security_shows_an_engine_session_its_scope_only(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    with connect(db_url, login_roles.engine) as conn:
        def tenants(table: str) -> set[str]:
            return {r[0] for r in conn.execute(f"SELECT tenant_id FROM warden.{table}")}

        for table in ("runs", "steps", "jobs", "timeline", "workflows", "policy_decisions"):
            assert tenants(table) == set(), table  # no scope: no row
            conn.execute("SELECT set_config('warden.tenant', 't1', false)")
            assert tenants(table) == {"t1"}, table
            conn.execute("SELECT set_config('warden.tenant', '*', false)")
            assert tenants(table) == {"t1", "t2"}, table
            conn.execute("RESET warden.tenant")
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        assert conn.execute("UPDATE warden.runs SET needs_scheduling = true").rowcount == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK
            conn.execute("INSERT INTO warden.workflows (tenant_id, workflow_id, version, "
                         "version_major, version_minor, version_patch, name, definition, "
                         "digest, source, created_by) VALUES ('t2', 'w', '1.0.0', 1, 0, 0, "
                         "'w', '{}', 'd', 's', 'me')")


# The append functions sign what they append (SECURITY DEFINER, to read the chain key), so
# row-level security does not fence them: they check the session's tenant scope
# themselves (sql/functions/append_events.sql). Each attack names t2's run from t1's scope.
FORGED = '[{"kind": "approval.approved", "step_id": "gate", "actor": "mallory"}]'
APPENDS = {
    "append_event": "SELECT warden.append_event(%(tenant)s, %(run)s, 'approval.approved', "
                    "'gate', NULL, NULL, 'mallory', '{}')",
    "append_events": "SELECT warden.append_events(%(tenant)s, %(run)s, %(events)s)",
    "append_events_for_runs": "SELECT warden.append_events_for_runs(jsonb_build_array("
                              "jsonb_build_object('tenant_id', %(tenant)s::text, 'run_id', "
                              "%(run)s::uuid, 'events', %(events)s::jsonb)))",
}
BATCH = "SELECT warden.append_events_for_runs(%s::jsonb)"


def heads(db_url: str, runs: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Each tenant's run: its stored timeline head and its count of events (as superuser)."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        return {tenant: admin.execute(
            "SELECT r.timeline_seq, (SELECT count(*) FROM warden.timeline t "
            "WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id) FROM warden.runs r "
            "WHERE r.tenant_id = %s AND r.run_id = %s", [tenant, run.run_id]).fetchone()
            for tenant, run in runs.items()}


def batch(runs: dict[str, Any], *tenants: str) -> str:
    return json.dumps([{"tenant_id": t, "run_id": str(runs[t].run_id),
                        "events": json.loads(FORGED)} for t in tenants])


@pytest.mark.parametrize("call", sorted(APPENDS))
async def test_an_engine_session_cannot_append_to_a_run_of_a_tenant_outside_its_scope(
        db: Database, db_url: str, login_roles: LoginRoles, call: str) -> None:
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tenant t2"):
            conn.execute(APPENDS[call], {"tenant": "t2", "run": runs["t2"].run_id,
                                         "events": FORGED})
    assert heads(db_url, runs) == before
    with connect(db_url, login_roles.auditor) as conn:
        [(intact,)] = conn.execute("SELECT warden.verify_timeline(%s)",
                                   [runs["t2"].run_id]).fetchall()
    assert intact


@pytest.mark.parametrize("call", sorted(APPENDS))
async def test_another_tenants_run_named_under_the_scoped_tenant_is_not_found(
        db: Database, db_url: str, login_roles: LoginRoles, call: str) -> None:
    """The check reads the tenant given, and the run is looked up by (tenant, run): t2's run
    id under t1's name is no run at all."""
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        with pytest.raises(psycopg.Error) as missing:
            conn.execute(APPENDS[call], {"tenant": "t1", "run": runs["t2"].run_id,
                                         "events": FORGED})
    assert missing.value.sqlstate == "WD404"
    assert heads(db_url, runs) == before


async def test_a_batch_with_one_run_outside_the_scope_is_refused_whole(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        for order in (("t1", "t2"), ("t2", "t1")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="tenant t2"):
                conn.execute(BATCH, [batch(runs, *order)])
    assert heads(db_url, runs) == before  # t1's run got nothing either


@pytest.mark.parametrize("scope", [None, ""])
@pytest.mark.parametrize("call", sorted(APPENDS))
async def test_an_unscoped_engine_session_cannot_append_at_all(
        db: Database, db_url: str, login_roles: LoginRoles, call: str,
        scope: str | None) -> None:
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    with connect(db_url, login_roles.engine) as conn:
        if scope is not None:  # set, then emptied: the setting exists but names no tenant
            conn.execute("SELECT set_config('warden.tenant', %s, false)", [scope])
        for tenant in ("t1", "t2"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(APPENDS[call], {"tenant": tenant, "run": runs[tenant].run_id,
                                             "events": FORGED})
    assert heads(db_url, runs) == before


@pytest.mark.parametrize("call", sorted(APPENDS))
async def test_an_engine_session_appends_to_a_run_of_its_own_tenant(
        db: Database, db_url: str, login_roles: LoginRoles, call: str) -> None:
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        conn.execute(APPENDS[call], {"tenant": "t1", "run": runs["t1"].run_id,
                                     "events": FORGED})
        [(kind, actor, intact)] = conn.execute(
            "SELECT kind::text, actor, warden.verify_timeline(run_id) FROM warden.timeline "
            "WHERE run_id = %s ORDER BY seq DESC LIMIT 1", [runs["t1"].run_id]).fetchall()
    assert (kind, actor, intact) == ("approval.approved", "mallory", True)
    seq, count = before["t1"]
    assert heads(db_url, runs) == {"t1": (seq + 1, count + 1), "t2": before["t2"]}


async def test_an_engine_session_across_tenants_appends_to_any_run(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SELECT set_config('warden.tenant', '*', false)")
        conn.execute(BATCH, [batch(runs, "t1", "t2")])
        conn.execute(APPENDS["append_events"], {"tenant": "t2", "run": runs["t2"].run_id,
                                                "events": FORGED})
    after = heads(db_url, runs)
    assert after == {"t1": (before["t1"][0] + 1, before["t1"][1] + 1),
                     "t2": (before["t2"][0] + 2, before["t2"][1] + 2)}


@pytest.mark.parametrize("statement", [
    "SELECT warden.append_events_unscoped('t2', %(run)s, %(events)s)",
    "SELECT warden.append_events_for_runs_unscoped(jsonb_build_array(jsonb_build_object("
    "'tenant_id', 't2', 'run_id', %(run)s::uuid, 'events', %(events)s::jsonb)))",
    "SELECT warden.append_event_unscoped('t2', %(run)s, 'approval.approved', 'gate', NULL, "
    "NULL, 'mallory', '{}')",
    # the chain without the head: events a login role could insert ahead of the head
    "SELECT warden.chain_events_for_runs(jsonb_build_array(jsonb_build_object("
    "'tenant_id', 't2', 'run_id', %(run)s::uuid, 'events', %(events)s::jsonb)))",
])
async def test_no_login_role_calls_the_unscoped_appends(
        db: Database, db_url: str, login_roles: LoginRoles, statement: str) -> None:
    """The job functions' own way to the timeline: the engine cannot go round the scope
    check through it, nor a worker round its grants."""
    runs = await two_tenants(db)
    before = heads(db_url, runs)
    for role in (login_roles.engine, login_roles.worker_a, login_roles.auditor):
        with connect(db_url, role) as conn:
            conn.execute("SELECT set_config('warden.tenant', '*', false)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, {"run": runs["t2"].run_id, "events": FORGED})
    assert heads(db_url, runs) == before


@pytest.mark.parametrize("statement", [
    # the fence at a time of the caller's choosing: 'infinity' would make any token's
    # expired lease look held, were a login role to get a job row through it
    "SELECT warden.lease_held_at(NULL::warden.jobs, gen_random_uuid(), 'infinity')",
    "SELECT warden.lease_held(NULL::warden.jobs, gen_random_uuid())",
])
async def test_no_login_role_calls_the_fence_itself(
        db_url: str, login_roles: LoginRoles, statement: str) -> None:
    """The fence is the job functions' own: only they, as the owner, evaluate it, with
    the database's time."""
    for role in (login_roles.engine, login_roles.worker_a, login_roles.auditor):
        with connect(db_url, role) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


async def test_a_worker_session_still_appends_through_the_job_functions_of_many_tenants(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    """A worker session carries no tenant scope; the job functions append for it (their
    grant and lease checks are the fence), several tenants in one claim and one batch."""
    runs = await two_tenants(db)
    grant(db_url, login_roles.worker_a, "*")
    with connect(db_url, login_roles.worker_a) as conn:
        assert conn.execute("SELECT current_setting('warden.tenant', true)").fetchone() in (
            (None,), ("",))
        claimed = claim(conn)
        assert sorted(row[0] for row in claimed) == ["t1", "t2"]
        for _, job_id, token, _ in claimed:
            conn.execute("SELECT warden.heartbeat_job(%s, %s, interval '1 minute', "
                         "'{\"page\": 1}')", [job_id, token])
        outcomes = conn.execute(
            "SELECT outcome FROM warden.complete_jobs(%s, %s::uuid[], %s::jsonb[])",
            [[row[1] for row in claimed], [row[2] for row in claimed],
             ['{"done": true}'] * len(claimed)]).fetchall()
    assert sorted(outcomes) == [("completed",), ("completed",)]
    for tenant, run in runs.items():
        kinds = [e.kind for e in await support.events(db, run.run_id, tenant=tenant)]
        assert kinds[-3:] == ["job.claimed", "job.checkpointed", "job.succeeded"], tenant
    with connect(db_url, login_roles.auditor) as conn:
        for run in runs.values():
            assert conn.execute("SELECT warden.verify_timeline(%s)",
                                [run.run_id]).fetchone() == (True,)


async def test_a_worker_session_still_releases_and_fails_jobs_of_many_tenants(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    """release_job, fail_job and end_attempt's retry append one event at a time
    (append_event_unscoped) for a worker session with no scope."""
    runs = await two_tenants(db)
    grant(db_url, login_roles.worker_a, "*")
    with connect(db_url, login_roles.worker_a) as conn:
        jobs = {row[0]: row for row in claim(conn)}
        conn.execute("SELECT warden.release_job(%s, %s, 'shutting down')",
                     [jobs["t1"][1], jobs["t1"][2]])
        conn.execute("SELECT warden.fail_job(%s, %s, '{\"type\": \"Boom\"}', false)",
                     [jobs["t2"][1], jobs["t2"][2]])
    t1 = [e.kind for e in await support.events(db, runs["t1"].run_id, tenant="t1")]
    t2 = [e.kind for e in await support.events(db, runs["t2"].run_id, tenant="t2")]
    assert t1[-3:] == ["job.claimed", "job.failed", "job.retry_scheduled"]
    assert t2[-2:] == ["job.claimed", "job.failed"]
    with connect(db_url, login_roles.auditor) as conn:
        for run in runs.values():
            assert conn.execute("SELECT warden.verify_timeline(%s)",
                                [run.run_id]).fetchone() == (True,)


async def test_an_auditor_reads_every_tenant_and_writes_nothing(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    with connect(db_url, login_roles.auditor) as conn:
        assert {r[0] for r in conn.execute("SELECT tenant_id FROM warden.timeline")} == {
            "t1", "t2"}
        [(ok,)] = conn.execute("SELECT warden.verify_timeline(%s)",
                               [runs["t1"].run_id]).fetchall()
        assert ok
        for statement in ["UPDATE warden.runs SET status = 'cancelled'",
                          "INSERT INTO warden.policy_active (tenant_id, snapshot_hash, "
                          "activated_by) VALUES ('t1', 'x', 'me')",
                          "SELECT warden.claim_jobs(ARRAY['t.work'], 'w', 1, '1 minute')"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# ---------------------------------------------------------------- the chain checks' scope
# timeline_problems reads the chain keys (SECURITY DEFINER), so row-level security does not
# fence it (nor verify_timeline, which asks it): it checks the session's tenant scope itself
# (sql/functions/timeline_problems.sql). A run outside the scope must look exactly like a
# run that does not exist, and a broken chain of another tenant must not be listed.
CHECKS = {
    "verify_timeline": "SELECT warden.verify_timeline(%(run)s)",
    "timeline_problems": "SELECT * FROM warden.timeline_problems(NULL, %(run)s)",
    "timeline_problems of its tenant": "SELECT * FROM warden.timeline_problems(%(tenant)s, "
                                       "%(run)s)",
}
LISTING = "SELECT tenant_id, run_id FROM warden.timeline_problems(%s, NULL) ORDER BY 1"


def break_chain(db_url: str, tenant: str, run_id: UUID) -> None:
    """Rewrites an event of the run with the triggers off, as only a superuser can."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SET session_replication_role = replica")
        admin.execute("UPDATE warden.timeline SET actor = 'mallory' WHERE tenant_id = %s "
                      "AND run_id = %s AND seq = 1", [tenant, run_id])


def answer(conn: psycopg.Connection[tuple[Any, ...]], statement: str, tenant: str,
           run_id: UUID) -> tuple[str | None, str]:
    """What the session learns: the SQLSTATE and message it gets (run id blanked), or the
    rows."""
    try:
        rows = conn.execute(statement, {"tenant": tenant, "run": run_id}).fetchall()
    except psycopg.Error as e:
        return e.sqlstate, str(e).replace(str(run_id), "<run>")
    return None, repr(rows)


def scoped(db_url: str, role: str, scope: str | None) -> psycopg.Connection[tuple[Any, ...]]:
    conn = connect(db_url, role)
    if scope is not None:
        conn.execute("SELECT set_config('warden.tenant', %s, false)", [scope])
    return conn


@pytest.mark.parametrize("broken", [False, True])
@pytest.mark.parametrize("call", sorted(CHECKS))
async def test_another_tenants_run_looks_like_no_run_to_a_scoped_engine_session(
        db: Database, db_url: str, login_roles: LoginRoles, call: str, broken: bool) -> None:
    runs = await two_tenants(db)
    if broken:
        break_chain(db_url, "t2", runs["t2"].run_id)
    with scoped(db_url, login_roles.engine, "t1") as conn:
        theirs = answer(conn, CHECKS[call], "t2", runs["t2"].run_id)
        nobodys = answer(conn, CHECKS[call], "t2", uuid4())
    assert theirs[0] == "WD404"
    assert theirs == nobodys
    with scoped(db_url, login_roles.engine, "*") as conn:  # the run is there
        assert answer(conn, CHECKS[call], "t2", runs["t2"].run_id)[0] is None


@pytest.mark.parametrize("call", sorted(CHECKS))
async def test_a_scoped_engine_session_checks_the_runs_of_its_own_tenant(
        db: Database, db_url: str, login_roles: LoginRoles, call: str) -> None:
    runs = await two_tenants(db)
    mine = runs["t1"].run_id
    with scoped(db_url, login_roles.engine, "t1") as conn:
        intact = conn.execute(CHECKS[call], {"tenant": "t1", "run": mine}).fetchall()
        break_chain(db_url, "t1", mine)
        broken = conn.execute(CHECKS[call], {"tenant": "t1", "run": mine}).fetchall()
    if call == "verify_timeline":
        assert (intact, broken) == ([(True,)], [(False,)])
    else:
        assert intact == []
        [(tenant, run_id, seq, problem)] = broken
        assert (tenant, run_id, seq) == ("t1", mine, 1) and "hash" in problem


async def test_the_listing_of_broken_chains_names_only_the_tenants_in_scope(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    theirs, mine = ("t2", runs["t2"].run_id), ("t1", runs["t1"].run_id)

    def listing(role: str, scope: str | None, tenant: str | None = None) -> list[Any]:
        with scoped(db_url, role, scope) as conn:
            return conn.execute(LISTING, [tenant]).fetchall()

    break_chain(db_url, *theirs)
    assert listing(login_roles.engine, "t1") == []
    assert listing(login_roles.engine, "t1", "t2") == []
    assert listing(login_roles.engine, "*") == [theirs]
    assert listing(login_roles.auditor, None) == [theirs]
    break_chain(db_url, *mine)
    assert listing(login_roles.engine, "t1") == [mine]
    assert listing(login_roles.engine, "t1", "t1") == [mine]
    assert listing(login_roles.engine, "t1", "t2") == []
    assert listing(login_roles.engine, "*") == [mine, theirs]
    assert listing(login_roles.engine, "*", "t2") == [theirs]
    assert listing(login_roles.auditor, None) == [mine, theirs]
    assert listing(login_roles.auditor, "t1") == [mine, theirs]  # auditors read all anyway
    with psycopg.connect(db_url, autocommit=True) as admin:  # a superuser: every tenant
        assert admin.execute(LISTING, [None]).fetchall() == [mine, theirs]


@pytest.mark.parametrize("scope", [None, ""])
async def test_an_unscoped_engine_session_checks_no_run(
        db: Database, db_url: str, login_roles: LoginRoles, scope: str | None) -> None:
    runs = await two_tenants(db)
    for tenant, run in runs.items():
        break_chain(db_url, tenant, run.run_id)
    with scoped(db_url, login_roles.engine, scope) as conn:
        assert conn.execute(LISTING, [None]).fetchall() == []
        assert conn.execute(LISTING, ["t1"]).fetchall() == []
        for tenant, run in runs.items():
            for call in CHECKS.values():
                assert answer(conn, call, tenant, run.run_id)[0] == "WD404"


async def test_an_auditor_checks_every_tenants_runs_without_a_scope(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    runs = await two_tenants(db)
    break_chain(db_url, "t2", runs["t2"].run_id)
    with scoped(db_url, login_roles.auditor, None) as conn:
        assert conn.execute("SELECT tenant_id, warden.verify_timeline(run_id) FROM "
                            "warden.runs ORDER BY 1").fetchall() == [("t1", True),
                                                                     ("t2", False)]
        [(tenant, _, seq, _)] = conn.execute(
            "SELECT * FROM warden.timeline_problems(NULL, %s)",
            [runs["t2"].run_id]).fetchall()
    assert (tenant, seq) == ("t2", 1)


def expire_leases(db_url: str, login_roles: LoginRoles) -> None:
    """Both tenants' jobs claimed by a worker, their leases then past (as a superuser)."""
    grant(db_url, login_roles.worker_a, "*")
    with connect(db_url, login_roles.worker_a) as conn:
        assert sorted(row[0] for row in claim(conn)) == ["t1", "t2"]
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("UPDATE warden.jobs SET lease_expires_at = warden.now() - "
                      "interval '1 second' WHERE status = 'running'")


def running(db_url: str) -> list[str]:
    with psycopg.connect(db_url, autocommit=True) as admin:
        return [r[0] for r in admin.execute("SELECT tenant_id FROM warden.jobs WHERE status "
                                            "= 'running' ORDER BY 1")]


async def test_a_scoped_engine_session_reaps_only_its_tenants_expired_jobs(
        db: Database, db_url: str, login_roles: LoginRoles) -> None:
    await two_tenants(db)
    expire_leases(db_url, login_roles)
    for scope, reaped, left in [(None, 0, ["t1", "t2"]), ("", 0, ["t1", "t2"]),
                                ("t1", 1, ["t2"]), ("t1", 0, ["t2"]), ("*", 1, [])]:
        with scoped(db_url, login_roles.engine, scope) as conn:
            assert conn.execute("SELECT warden.reap_expired_jobs(10)").fetchone() == (
                reaped,), scope
        assert running(db_url) == left, scope


# ---------------------------------------------------------------- migrations

async def test_migrate_as_a_role_that_may_not_refuses_clearly_and_creates_nothing(
        empty_db_url: str, login_roles: LoginRoles) -> None:
    from engine.core.errors import Forbidden
    from engine.store.migrate import upgrade

    with psycopg.connect(empty_db_url, autocommit=True) as admin:  # PG 15: no CREATE on public
        admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with pytest.raises(Forbidden, match="permission denied"):
        upgrade(as_role(empty_db_url, login_roles.engine))
    with psycopg.connect(empty_db_url, autocommit=True) as admin:
        assert admin.execute("SELECT to_regnamespace('warden')").fetchone() == (None,)


async def test_a_worker_refreshes_and_stops_only_its_own_presence_row(
        db_url: str, login_roles: LoginRoles) -> None:
    """warden.worker_register/heartbeat/stop (SECURITY DEFINER): a worker role touches no
    table, and another login role cannot keep a dead worker alive or mark a live one gone."""
    with connect(db_url, login_roles.worker_a) as conn:
        [(worker_id, role)] = conn.execute(
            "SELECT worker_id, role_name FROM warden.worker_register('a-1', 'host', 1, "
            "ARRAY['t.work'], 2, 'test', 5000)").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE warden.workers SET stopped_at = now()")
    assert role == login_roles.worker_a
    with connect(db_url, login_roles.worker_b) as other:
        assert other.execute("SELECT * FROM warden.worker_heartbeat(%s, 7)",
                             [worker_id]).fetchall() == []
        other.execute("SELECT warden.worker_stop(%s)", [worker_id])
    with psycopg.connect(db_url) as admin:
        assert admin.execute("SELECT jobs_in_flight, stopped_at FROM warden.workers "
                             "WHERE worker_id = %s", [worker_id]).fetchone() == (0, None)
    with connect(db_url, login_roles.worker_a) as conn:
        [(in_flight,)] = conn.execute("SELECT jobs_in_flight FROM warden.worker_heartbeat("
                                      "%s, 3)", [worker_id]).fetchall()
        assert in_flight == 3
        conn.execute("SELECT warden.worker_stop(%s)", [worker_id])
    with psycopg.connect(db_url) as admin:
        [(stopped,)] = admin.execute("SELECT stopped_at IS NOT NULL FROM warden.workers "
                                     "WHERE worker_id = %s", [worker_id]).fetchall()
        assert stopped


# ---------------------------------------------------------------- held jobs

HELD = """
id: held
name: held
version: 1.0.0
steps:
  pay: {type: job, topic: t.pay}
"""


async def held_job(db: Database) -> str:
    """A run whose only job is blocked for a policy approval; returns the job id."""
    stored = await decisions.store_bundle(
        db, tenant_id="t1", media_type=None, created_by="admin",
        source="default_decision: allow\nrules:\n  - name: ask\n    match: {topics: [t.pay]}\n"
               "    decision: require_approval\n    reason: money\n")
    await decisions.activate(db, tenant_id="t1", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")
    await support.store(db, HELD, tenant="t1")
    run = await support.start(db, "held", {}, tenant="t1")
    await support.settle(Scheduler(support.services(db)))
    [job] = (await support.detail(db, run.run_id)).jobs
    assert job.status is JobStatus.BLOCKED
    return job.job_id


# an allow decision written by hand, in the job's run's partition
FORGED_DECISION = (
    "INSERT INTO warden.policy_decisions (tenant_id, stage, snapshot_hash, decision, reason, "
    "run_id, step_id, job_id, run_created_at) SELECT j.tenant_id, 'dispatch', {snapshot}, "
    "'allow', 'x', j.run_id, j.step_id, {job}, r.created_at FROM warden.jobs j "
    "JOIN warden.runs r USING (tenant_id, run_id) WHERE j.job_id = %(job)s")


@pytest.mark.parametrize("forgery", [
    [],  # the bare release
    # a decision that allows, but under another snapshot than the job carries
    [FORGED_DECISION.format(snapshot="repeat('0', 64)", job="j.job_id")],
    # an allow decision for another job of the tenant
    [FORGED_DECISION.format(snapshot="j.policy_snapshot_hash", job="'other'")],
])
async def test_the_engine_role_cannot_release_a_held_job_without_a_recorded_reason(
        db: Database, db_url: str, login_roles: LoginRoles, forgery: list[str]) -> None:
    job_id = await held_job(db)
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SET warden.tenant = 't1'")
        with pytest.raises(psycopg.DatabaseError) as refused, conn.transaction():
            for statement in forgery:
                conn.execute(statement, {"job": job_id})
            conn.execute("UPDATE warden.jobs SET status = 'pending' WHERE job_id = %s",
                         [job_id])
    assert refused.value.sqlstate == "WD010"
    assert "neither an approved policy approval nor an allow decision" in str(refused.value)
    [job] = [j for j in (await support.detail(db, _run_of(job_id))).jobs]
    assert job.status is JobStatus.BLOCKED
    with connect(db_url, login_roles.engine) as conn:
        conn.execute("SET warden.tenant = 't1'")
        assert conn.execute("SELECT count(*) FROM warden.policy_decisions WHERE job_id = "
                            "'other'").fetchone() == (0,)


async def test_a_held_job_is_released_by_deciding_its_approval(
        db: Database, db_url: str) -> None:
    job_id = await held_job(db)
    [approval] = (await support.detail(db, _run_of(job_id))).approvals
    await approvals.decide(db, tenant_id="t1", approval_id=approval.approval_id, approve=True,
                           principal="bob", job_hash=approval.job_hash)
    [job] = (await support.detail(db, _run_of(job_id))).jobs
    assert job.status is JobStatus.PENDING


def _run_of(job_id: str) -> UUID:
    return UUID(job_id.split(":", 1)[0])
