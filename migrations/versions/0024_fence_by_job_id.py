"""warden.lease_held compares the job's status as text, so the fence never implies the
predicate of the partial index jobs_running_lease. Where it did, the generic plan of
complete_jobs' first statement walked that index (every running job of the fleet) and
filtered each row against the batch: a completion of 32 jobs took 6.7 ms with 3,000
jobs running and 4.1 ms after (bench/README.md, session 8).

Revision ID: 0024_fence_by_job_id
Revises: 0023_ends_observed_apart
Create Date: 2026-12-06

Frozen. The function text is a verbatim copy of sql/functions/lease_held.sql as of this
change; the downgrade restores the one before it.
"""

from alembic import op

revision = "0024_fence_by_job_id"
down_revision = "0023_ends_observed_apart"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- THE fence: a worker's write to a job lands only while the worker still holds the job's
-- lease — the job is running, the token is the one this claim handed out, and the lease
-- has not expired, whether or not the reaper has seen it yet — and while its login role
-- is still granted the job's tenant and topic (warden.granted). Every worker write
-- (heartbeat_job, complete_job(s), fail_job, release_job) filters on this and nothing
-- else. A SQL function so the planner inlines it into each UPDATE's WHERE clause: the
-- job is still found by its index (jobs_by_job_id), the fence is evaluated on that row.
-- The status is compared as text so that the fence never implies the predicate of the
-- partial index jobs_running_lease: where it did, generic plans made while few jobs were
-- running walked that index (every running job) and filtered each row against the
-- batch, and a completion of 32 jobs cost per running job in the fleet (bench/README.md).
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status::text = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > warden.now() AND warden.granted(j.tenant_id, j.topic)
$$;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
-- THE fence: a worker's write to a job lands only while the worker still holds the job's
-- lease — the job is running, the token is the one this claim handed out, and the lease
-- has not expired, whether or not the reaper has seen it yet — and while its login role
-- is still granted the job's tenant and topic (warden.granted). Every worker write
-- (heartbeat_job, complete_job(s), fail_job, release_job) filters on this and nothing
-- else. A SQL function so the planner inlines it into each UPDATE's WHERE clause: the
-- job is still found by its index (jobs_by_job_id), the fence is evaluated on that row.
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > warden.now() AND warden.granted(j.tenant_id, j.topic)
$$;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
