"""The reconciler's report of unclaimed jobs gets an index by `available_at` and looks
back a window behind the dispatch timeout (docs/design.md#lookbacks): through
jobs_claimable it walked, on every pass, every entry an old snapshot kept.

Revision ID: 0038_unclaimed_lookback
Revises: 0037_claim_snapshot_per_lane
Create Date: 2026-12-07

Frozen. The index is sql/schema/20_runs.sql's. A plain CREATE INDEX, as earlier
migrations' (it holds off writes to warden.jobs while it builds: on a large table, build
it CONCURRENTLY by hand first, and this one is then a no-op).
"""

from alembic import op

revision = "0038_unclaimed_lookback"
down_revision = "0037_claim_snapshot_per_lane"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
CREATE INDEX IF NOT EXISTS jobs_unclaimed_by_available ON warden.jobs (available_at)
    WHERE status = 'pending' AND unclaimed_reported_at IS NULL;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP INDEX warden.jobs_unclaimed_by_available;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
