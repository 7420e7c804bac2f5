"""The definer functions that read for a caller ask its tenant scope, as row-level
security would: warden.timeline_problems (and warden.verify_timeline, which asks it)
answers an engine session only about runs of the tenants in its warden.tenant scope (a run
of another tenant is not found, WD404, like a run that does not exist), and its listing
of every tenant's broken chains is the scoped tenant's only; warden.reap_expired_jobs
reaps the expired jobs of the scoped tenant only. Whoever row-level security shows every
tenant (scope '*', auditors, the owner, a superuser) is asked nothing: the new
warden.sees_every_tenant says who.

Revision ID: 0018_timeline_scope
Revises: 0017_completion_ends_runs
Create Date: 2026-12-06

Frozen. The function texts are verbatim copies of sql/functions/sees_every_tenant.sql,
timeline_problems.sql and reap_expired_jobs.sql as of this change. Closes the gap "some
definer functions do not ask the tenant scope" (docs/design.md).
"""

from alembic import op

revision = "0018_timeline_scope"
down_revision = "0017_completion_ends_runs"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- True when row-level security (sql/grants/30_row_security.sql) would show this session
-- the rows of every tenant: its scope is '*' (the loops that act across tenants by design,
-- engine/store/scope.py), or its login is an auditor (policy audit_reads), the schema's
-- owner or a superuser (no policy applies to them; pg_has_role is true for a superuser).
-- The SECURITY DEFINER functions that read for a caller ask it, as row-level security
-- does not fence the owner they run as (docs/security.md). session_user: inside such a
-- function current_user is the owner. Called as the owner only: no grant.
CREATE OR REPLACE FUNCTION warden.sees_every_tenant() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('warden.tenant', true) = '*', false)
        OR pg_has_role(session_user, 'warden_auditor', 'USAGE')
        OR pg_has_role(session_user, 'warden_owner', 'USAGE')
$$;
-- The first thing wrong with each broken chain: of one run (p_run), or of every run of a
-- tenant (p_tenant) or of all tenants (both NULL). A run is listed once, with the seq and
-- what differs: an event (warden.timeline_check), or the head stored on the run not being
-- the last event (a deleted tail). No row: every chain asked about holds. SECURITY
-- DEFINER (the check reads the chain keys); it returns no hash, so anyone may call it.
-- One run is its own query, with plain equalities on (tenant_id, run_id): PL/pgSQL may
-- reuse a generic plan after a few calls, and only then does it still use the primary key
-- (verify_timeline is called once per run by `WHERE NOT warden.verify_timeline(run_id)`).
--
-- The tenant fence of row-level security (sql/grants/30_row_security.sql), kept by a
-- function that bypasses it: an engine session is answered only about runs of the tenants
-- in its scope (warden.in_scope). A run of another tenant is not found, with the same
-- error as a run that does not exist, so its existence does not leak; the listing is of
-- the scoped tenant's runs alone, and of no run without a scope. Whoever row-level
-- security shows every tenant (scope '*', auditors, the owner, a superuser:
-- warden.sees_every_tenant) is answered about every run. One run: the scope is checked
-- on the tenant the run's lookup found, in_scope first (sees_every_tenant, two role
-- lookups, only when it says no), so the cost per run of the '*' loops is unchanged.
CREATE OR REPLACE FUNCTION warden.timeline_problems(p_tenant text, p_run uuid)
RETURNS TABLE (tenant_id text, run_id uuid, seq bigint, problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
    v_seq    bigint;
    v_hash   text;
    v_scope  text;
BEGIN
    IF p_run IS NOT NULL THEN
        SELECT r.tenant_id, r.timeline_seq, r.timeline_hash INTO v_tenant, v_seq, v_hash
          FROM warden.runs r
         WHERE r.run_id = p_run AND (p_tenant IS NULL OR r.tenant_id = p_tenant);
        IF NOT FOUND OR NOT (coalesce(warden.in_scope(v_tenant), false)
                             OR warden.sees_every_tenant()) THEN
            RAISE EXCEPTION 'run % not found', p_run USING ERRCODE = 'WD404';
        END IF;
        RETURN QUERY
        SELECT c.tenant_id, c.run_id, c.seq, c.problem FROM warden.timeline_check c
         WHERE c.tenant_id = v_tenant AND c.run_id = p_run AND c.problem IS NOT NULL
         ORDER BY c.seq LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY
            SELECT v_tenant, p_run, greatest(v_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || v_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM (SELECT max(t.seq) AS seq FROM warden.timeline t
                     WHERE t.tenant_id = v_tenant AND t.run_id = p_run) m
              LEFT JOIN warden.timeline l
                     ON l.tenant_id = v_tenant AND l.run_id = p_run AND l.seq = m.seq
             WHERE coalesce(l.seq, 0) <> v_seq OR coalesce(l.hash, repeat('0', 64)) <> v_hash;
        END IF;
        RETURN;
    END IF;
    IF NOT warden.sees_every_tenant() THEN
        -- scoped to one tenant (any other scope than '*' names one): its runs only, the
        -- listing of one tenant below; unset or empty, none
        v_scope := nullif(current_setting('warden.tenant', true), '');
        IF v_scope IS NULL OR p_tenant <> v_scope THEN
            RETURN;
        END IF;
        p_tenant := v_scope;
    END IF;
    RETURN QUERY
    SELECT DISTINCT ON (x.tenant_id, x.run_id) x.tenant_id, x.run_id, x.seq, x.problem
      FROM (SELECT c.tenant_id, c.run_id, c.seq, c.problem
              FROM warden.timeline_check c
             WHERE c.problem IS NOT NULL AND (p_tenant IS NULL OR c.tenant_id = p_tenant)
            UNION ALL
            SELECT r.tenant_id, r.run_id, greatest(r.timeline_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || r.timeline_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM warden.runs r
              LEFT JOIN LATERAL (SELECT t.seq, t.hash FROM warden.timeline t
                                  WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id
                                  ORDER BY t.seq DESC LIMIT 1) l ON true
             WHERE (p_tenant IS NULL OR r.tenant_id = p_tenant)
               AND (coalesce(l.seq, 0) <> r.timeline_seq
                    OR coalesce(l.hash, repeat('0', 64)) <> r.timeline_hash)) x
     ORDER BY x.tenant_id, x.run_id, x.seq;
END $$;
-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
-- It bypasses row-level security (SECURITY DEFINER), so it keeps its tenant fence: an
-- engine session reaps the jobs of the tenant in its scope only (warden.in_scope), the
-- reaper's '*' (engine/store/scope.py), the owner and a superuser every tenant's
-- (warden.sees_every_tenant, asked once per call).
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j       warden.jobs;
    v_n     integer := 0;
    v_now   timestamptz := warden.now();
    v_all   boolean := warden.sees_every_tenant();
    v_scope text := current_setting('warden.tenant', true);
BEGIN
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
               AND (v_all OR t.tenant_id = v_scope)
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = v_now,
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.timed_out',
            j.step_id, j.job_id, j.attempt, 'reaper', jsonb_build_object('error', j.error));
        PERFORM warden.end_attempt(j, 'timed_out', j.error, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
-- The first thing wrong with each broken chain: of one run (p_run), or of every run of a
-- tenant (p_tenant) or of all tenants (both NULL). A run is listed once, with the seq and
-- what differs: an event (warden.timeline_check), or the head stored on the run not being
-- the last event (a deleted tail). No row: every chain asked about holds. SECURITY
-- DEFINER (the check reads the chain keys); it returns no hash, so anyone may call it.
-- One run is its own query, with plain equalities on (tenant_id, run_id): PL/pgSQL may
-- reuse a generic plan after a few calls, and only then does it still use the primary key
-- (verify_timeline is called once per run by `WHERE NOT warden.verify_timeline(run_id)`).
CREATE OR REPLACE FUNCTION warden.timeline_problems(p_tenant text, p_run uuid)
RETURNS TABLE (tenant_id text, run_id uuid, seq bigint, problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
    v_seq    bigint;
    v_hash   text;
BEGIN
    IF p_run IS NOT NULL THEN
        SELECT r.tenant_id, r.timeline_seq, r.timeline_hash INTO v_tenant, v_seq, v_hash
          FROM warden.runs r
         WHERE r.run_id = p_run AND (p_tenant IS NULL OR r.tenant_id = p_tenant);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'run % not found', p_run USING ERRCODE = 'WD404';
        END IF;
        RETURN QUERY
        SELECT c.tenant_id, c.run_id, c.seq, c.problem FROM warden.timeline_check c
         WHERE c.tenant_id = v_tenant AND c.run_id = p_run AND c.problem IS NOT NULL
         ORDER BY c.seq LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY
            SELECT v_tenant, p_run, greatest(v_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || v_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM (SELECT max(t.seq) AS seq FROM warden.timeline t
                     WHERE t.tenant_id = v_tenant AND t.run_id = p_run) m
              LEFT JOIN warden.timeline l
                     ON l.tenant_id = v_tenant AND l.run_id = p_run AND l.seq = m.seq
             WHERE coalesce(l.seq, 0) <> v_seq OR coalesce(l.hash, repeat('0', 64)) <> v_hash;
        END IF;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT DISTINCT ON (x.tenant_id, x.run_id) x.tenant_id, x.run_id, x.seq, x.problem
      FROM (SELECT c.tenant_id, c.run_id, c.seq, c.problem
              FROM warden.timeline_check c
             WHERE c.problem IS NOT NULL AND (p_tenant IS NULL OR c.tenant_id = p_tenant)
            UNION ALL
            SELECT r.tenant_id, r.run_id, greatest(r.timeline_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || r.timeline_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM warden.runs r
              LEFT JOIN LATERAL (SELECT t.seq, t.hash FROM warden.timeline t
                                  WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id
                                  ORDER BY t.seq DESC LIMIT 1) l ON true
             WHERE (p_tenant IS NULL OR r.tenant_id = p_tenant)
               AND (coalesce(l.seq, 0) <> r.timeline_seq
                    OR coalesce(l.hash, repeat('0', 64)) <> r.timeline_hash)) x
     ORDER BY x.tenant_id, x.run_id, x.seq;
END $$;
-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_n   integer := 0;
    v_now timestamptz := warden.now();
BEGIN
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = v_now,
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.timed_out',
            j.step_id, j.job_id, j.attempt, 'reaper', jsonb_build_object('error', j.error));
        PERFORM warden.end_attempt(j, 'timed_out', j.error, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;
DROP FUNCTION warden.sees_every_tenant();
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
