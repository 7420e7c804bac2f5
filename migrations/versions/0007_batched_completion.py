"""complete_jobs: a worker completes a batch of jobs in one transaction.

Revision ID: 0007_batched_completion
Revises: 0006_batched_events
Create Date: 2026-12-01

Frozen. One commit per completed job made the commit (an fsync with durability on) the
price of every job: ~5 ms here, so ~200 jobs/s per worker connection whatever the
handler did. complete_jobs takes what a worker finished since its last flush and records
all of it in one statement, fenced exactly like complete_job, set-based where it can be.

Unlike complete_job it does not raise for a fenced job (one stale lease must not throw
away the rest of the batch): each job gets an outcome row instead.
"""

from alembic import op

revision = "0007_batched_completion"
down_revision = "0006_batched_events"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- outcome: 'completed', or why the write was fenced: 'lease_lost', 'cancelled',
-- 'not_found' (the same cases as raise_fenced's WD001 / WD002 / WD404).
CREATE FUNCTION warden.complete_jobs(job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_done warden.jobs[];
    r      record;
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- Lock order jobs -> runs -> steps. The jobs are locked by this UPDATE (each has one
    -- lease holder, so two completers never contend for a job); the runs are then locked
    -- in (tenant, run) order by append_events, as claim_jobs and the reaper do. The
    -- completed rows are kept in a variable, not a temporary table: a temp table per
    -- call would churn the system catalogs on the hottest path there is.
    WITH input AS (
        SELECT * FROM unnest(complete_jobs.job_ids, complete_jobs.lease_tokens,
                             complete_jobs.results) AS u(job_id, lease_token, result)
    ), done AS (
        UPDATE warden.jobs t
           SET status = 'succeeded', result = i.result, finished_at = now()
          FROM input i
         WHERE t.job_id = i.job_id AND t.status = 'running'
           AND t.lease_token = i.lease_token AND t.lease_expires_at > now()
        RETURNING t AS j
    )
    SELECT coalesce(array_agg(d.j ORDER BY (d.j).tenant_id, (d.j).run_id, (d.j).job_id), '{}')
      INTO v_done FROM done d;

    FOR r IN
        SELECT c.tenant_id, c.run_id,
               jsonb_agg(jsonb_build_object('kind', 'job.succeeded', 'step_id', c.step_id,
                                            'job_id', c.job_id, 'attempt', c.attempt,
                                            'actor', c.worker, 'data', '{}'::jsonb)
                         ORDER BY c.job_id) AS events
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
         ORDER BY c.tenant_id, c.run_id
    LOOP
        PERFORM warden.append_events(r.tenant_id, r.run_id, r.events);
    END LOOP;

    UPDATE warden.steps s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = now()
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running';

    -- wake_run, set-based: each run's flag once, one NOTIFY for the batch
    UPDATE warden.runs u SET needs_scheduling = true
      FROM (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
     WHERE u.tenant_id = c.tenant_id AND u.run_id = c.run_id AND NOT u.needs_scheduling;
    IF cardinality(v_done) > 0 THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;

    RETURN QUERY
        SELECT i.job_id,
               CASE WHEN c.job_id IS NOT NULL THEN 'completed'
                    WHEN j.job_id IS NULL THEN 'not_found'
                    WHEN j.status = 'cancelled' THEN 'cancelled'
                    ELSE 'lease_lost' END
          FROM unnest(complete_jobs.job_ids) AS i(job_id)
          LEFT JOIN unnest(v_done) c ON c.job_id = i.job_id
          LEFT JOIN warden.jobs j ON c.job_id IS NULL AND j.job_id = i.job_id;
END $$;
"""

DOWNGRADE = r"""
DROP FUNCTION warden.complete_jobs(text[], uuid[], jsonb[]);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
