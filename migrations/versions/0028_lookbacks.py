"""Lookbacks: the reaper and the observer of ends scan their time-ordered indexes a few
seconds back, all the way once a minute (docs/design.md#lookbacks). While an old
snapshot was open, each pass walked the entries of every lease and every end handled
since it was taken.

Revision ID: 0028_lookbacks
Revises: 0027_scheduling_floors
Create Date: 2026-12-06

Frozen. warden.reap_expired_jobs is a verbatim copy of sql/functions/reap_expired_jobs.sql
as of this change (the downgrade restores the one before), the index
sql/schema/20_runs.sql's.
"""

from alembic import op

revision = "0028_lookbacks"
down_revision = "0027_scheduling_floors"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP FUNCTION warden.reap_expired_jobs(integer);
-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
-- It bypasses row-level security (SECURITY DEFINER), so it keeps its tenant fence: an
-- engine session reaps the jobs of the tenant in its scope only (warden.in_scope), the
-- reaper's '*' (engine/store/scope.py), the owner and a superuser every tenant's
-- (warden.sees_every_tenant, asked once per call).
--
-- p_lookback: only leases that expired within it (NULL: all). The reaper looks back a
-- few seconds on most passes and all the way on one a minute (engine/process/lookback.py):
-- while an old snapshot is open, the index keeps an entry for every lease of every job
-- that ended since, all expired, and a scan from the first walked them all every second.
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer,
                                                    p_lookback interval DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j       warden.jobs;
    v_n     integer := 0;
    v_now   timestamptz := warden.now();
    v_all   boolean := warden.sees_every_tenant();
    v_scope text := current_setting('warden.tenant', true);
BEGIN
    IF p_lookback <= interval '0' THEN
        RAISE EXCEPTION 'lookback must be > 0 (NULL: every expired lease)'
            USING ERRCODE = '22023';
    END IF;
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
               AND t.lease_expires_at >= CASE WHEN p_lookback IS NULL
                                              THEN '-infinity'::timestamptz
                                              ELSE v_now - p_lookback END
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

-- (sql/grants/20_privileges.sql)
GRANT EXECUTE ON FUNCTION warden.reap_expired_jobs(integer, interval) TO warden_engine;
-- (sql/schema/20_runs.sql)
DROP INDEX warden.runs_end_unobserved;
-- The ends a worker's completion wrote and no serve has observed yet: tiny for the same
-- reason (docs/design.md#scale-path); by end time, so that the observer looks back a few
-- seconds only, past the entries an old snapshot keeps (docs/design.md#lookbacks).
CREATE INDEX runs_end_unobserved ON warden.runs (finished_at) WHERE end_unobserved;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP FUNCTION warden.reap_expired_jobs(integer, interval);
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

GRANT EXECUTE ON FUNCTION warden.reap_expired_jobs(integer) TO warden_engine;
DROP INDEX warden.runs_end_unobserved;
CREATE INDEX runs_end_unobserved ON warden.runs (tenant_id, run_id) WHERE end_unobserved;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
