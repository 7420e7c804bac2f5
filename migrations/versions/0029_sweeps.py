"""Sweeps: the reconciler finds open runs per tenant through runs_by_status, and the
index runs_open, which only the sweeps read, is gone (docs/design.md#sweeps). With
statistics taken while no run was open, the planner took runs_open for the deadline check
every 10 s too, and under an old snapshot that walked every run open since.

Revision ID: 0029_sweeps
Revises: 0028_lookbacks
Create Date: 2026-12-07

Frozen. The downgrade restores the index as sql/schema/20_runs.sql had it.
"""

from alembic import op

revision = "0029_sweeps"
down_revision = "0028_lookbacks"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP INDEX warden.runs_open;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
-- The reconciler looks at open runs only; finished ones are the vast majority.
CREATE INDEX runs_open ON warden.runs (tenant_id, run_id) WHERE finished_at IS NULL;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
