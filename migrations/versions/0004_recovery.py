"""Recovery: what the reconciler scans, and the once-only report of unclaimed jobs.

Revision ID: 0004_recovery
Revises: 0003_api_keys
Create Date: 2026-11-25

Frozen.
"""

from alembic import op

revision = "0004_recovery"
down_revision = "0003_api_keys"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- The reconciler looks at open runs only; finished ones are the vast majority.
CREATE INDEX runs_open ON warden.runs (tenant_id, run_id) WHERE finished_at IS NULL;

-- Set when a job waited past the dispatch timeout without a claim and was reported (once).
ALTER TABLE warden.jobs ADD COLUMN unclaimed_reported_at timestamptz;
"""

DOWNGRADE = r"""
ALTER TABLE warden.jobs DROP COLUMN unclaimed_reported_at;
DROP INDEX warden.runs_open;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
