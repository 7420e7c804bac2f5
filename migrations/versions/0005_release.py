"""release_job: a worker that stops gives its job back without spending a retry.

Revision ID: 0005_release
Revises: 0004_recovery
Create Date: 2026-11-25

Frozen.
"""

from alembic import op

revision = "0005_release"
down_revision = "0004_recovery"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- Ends the attempt (fenced by the lease token like every worker write) and schedules the
-- next one at once. A release is the worker's decision, not the job's failure: the step's
-- max_attempts grows by one so the released attempt is not counted against its retries.
CREATE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    j     warden.jobs;
    v_err jsonb;
BEGIN
    v_err := jsonb_build_object('type', 'Released', 'message', release_job.reason);
    UPDATE warden.jobs t
       SET status = 'failed', error = v_err, finished_at = now()
     WHERE t.job_id = release_job.job_id AND t.status = 'running'
       AND t.lease_token = release_job.lease_token AND t.lease_expires_at > now()
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(release_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', v_err, 'released', true));
    UPDATE warden.steps SET max_attempts = max_attempts + 1
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.end_attempt(j, 'failed', v_err, true);
    UPDATE warden.steps SET retry_at = now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND retry_at IS NOT NULL;
END $$;
"""

DOWNGRADE = r"""
DROP FUNCTION warden.release_job(text, uuid, text);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
