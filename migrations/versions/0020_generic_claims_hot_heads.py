"""claim_jobs and append_events_for_runs_unscoped run on generic plans from their first call,
and warden.runs keeps room on its pages (fillfactor 70) so the timeline-head update of
every claim and completion stays HOT.

A custom plan per statement per call cost ~0.6 ms of a ~0.9 ms claim of one job
(probe: ~0.28 ms on the generic plan); the append's statements likewise have one shape
whatever the batch. On packed pages about a quarter of the head updates could not stay on
their page and wrote all nine of the table's indexes.

Revision ID: 0020_generic_claims_hot_heads
Revises: 0019_generic_completion_plans
Create Date: 2026-12-06

Frozen. Only settings change: the function bodies stay those of sql/functions/ as of this
change, and the fillfactor applies to pages written from now on.
"""

from alembic import op

revision = "0020_generic_claims_hot_heads"
down_revision = "0019_generic_completion_plans"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
ALTER FUNCTION warden.claim_jobs(text[], text, integer, interval)
    SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION warden.append_events_for_runs_unscoped(jsonb)
    SET plan_cache_mode = force_generic_plan;
ALTER TABLE warden.runs SET (fillfactor = 70);
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
ALTER FUNCTION warden.claim_jobs(text[], text, integer, interval) RESET plan_cache_mode;
ALTER FUNCTION warden.append_events_for_runs_unscoped(jsonb) RESET plan_cache_mode;
ALTER TABLE warden.runs RESET (fillfactor);
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
