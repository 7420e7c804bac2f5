"""Live workers: who polls which topics, heartbeating, so an operator sees a job nobody
takes at once; and an index for the claim rate per topic.

Revision ID: 0010_workers
Revises: 0009_claim_per_topic
Create Date: 2026-12-06

Frozen. A worker (the Python one, or any SQL worker that chooses to) registers a row at
start, refreshes `last_seen_at` and `jobs_in_flight` every `heartbeat_ms`, and sets
`stopped_at` at a clean exit. Liveness is derived, never stored: a row is live while it
is not stopped and was seen within three heartbeats. Workers serve every tenant, so the
table is not tenant-keyed.
"""

from alembic import op

revision = "0010_workers"
down_revision = "0009_claim_per_topic"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE warden.workers (
    worker_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    host           text NOT NULL,
    pid            integer NOT NULL,
    topics         text[] NOT NULL CHECK (cardinality(topics) >= 1),
    concurrency    integer NOT NULL CHECK (concurrency >= 1),
    version        text NOT NULL,
    heartbeat_ms   integer NOT NULL CHECK (heartbeat_ms > 0),
    jobs_in_flight integer NOT NULL DEFAULT 0 CHECK (jobs_in_flight >= 0),
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    stopped_at     timestamptz
);
-- "which live workers poll topic X": the rows not stopped, by topic
CREATE INDEX workers_topics ON warden.workers USING gin (topics) WHERE stopped_at IS NULL;
-- the claim rate per topic (claims in the last minute) reads only recent claims
CREATE INDEX jobs_by_started ON warden.jobs (started_at, topic) WHERE started_at IS NOT NULL;
"""

DOWNGRADE = r"""
DROP INDEX warden.jobs_by_started;
DROP TABLE warden.workers;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
