"""Live workers: who polls which topics, heartbeating, so an operator sees a job nobody
takes at once; and an index for the claim rate per topic.

Revision ID: 0004_workers
Revises: 0003_rerun_approvals
Create Date: 2026-12-06

Frozen. Same text as sql/schema/90_workers.sql and sql/functions/worker_*.sql. A worker
role touches no table (docs/security.md): it registers, refreshes and stops its own row
through three SECURITY DEFINER functions, which record and check its login role.
"""

from alembic import op

revision = "0004_workers"
down_revision = "0003_rerun_approvals"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Live workers (docs/operating.md): who polls which topics, so an operator sees a job
-- nobody takes at once. A worker — the Python one, or any SQL worker that chooses to —
-- registers a row at start through warden.worker_register, refreshes last_seen_at and
-- jobs_in_flight every heartbeat_ms (warden.worker_heartbeat), and sets stopped_at at a
-- clean exit (warden.worker_stop). Liveness is derived, never stored: a row is live while
-- it is not stopped and was seen within three heartbeats. Workers serve every tenant, so
-- the table is not tenant-keyed; role_name is the login role that registered the row, the
-- only one that may refresh or stop it.
CREATE TABLE warden.workers (
    worker_id      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    role_name      text        NOT NULL DEFAULT session_user,
    name           text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    host           text        NOT NULL CHECK (length(host) <= 255),
    pid            integer     NOT NULL,
    topics         text[]      NOT NULL CHECK (cardinality(topics) BETWEEN 1 AND 1000),
    concurrency    integer     NOT NULL CHECK (concurrency >= 1),
    version        text        NOT NULL CHECK (length(version) <= 100),
    heartbeat_ms   integer     NOT NULL CHECK (heartbeat_ms > 0),
    jobs_in_flight integer     NOT NULL DEFAULT 0 CHECK (jobs_in_flight >= 0),
    started_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(),
    stopped_at     timestamptz
);
-- "which live workers poll topic X": the rows not stopped, by topic
CREATE INDEX workers_topics ON warden.workers USING gin (topics) WHERE stopped_at IS NULL;

-- sql/schema/20_runs.sql
CREATE INDEX jobs_by_started ON warden.jobs (started_at, topic) WHERE started_at IS NOT NULL;
-- A worker announces itself at start and gets its warden.workers row back. SECURITY
-- DEFINER: a worker role may execute the job protocol and these presence calls, and
-- touch no table (docs/security.md); the row records the login role that registered it.
-- Rows of workers gone (stopped or silent) for a day are pruned here, so the table stays
-- the size of the fleet without a janitor loop.
CREATE OR REPLACE FUNCTION warden.worker_register(
    p_name text, p_host text, p_pid integer, p_topics text[], p_concurrency integer,
    p_version text, p_heartbeat_ms integer
) RETURNS SETOF warden.workers
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM warden.workers
     WHERE coalesce(stopped_at, last_seen_at) < now() - interval '1 day';
    INSERT INTO warden.workers (role_name, name, host, pid, topics, concurrency, version,
                                heartbeat_ms)
    VALUES (session_user, p_name, p_host, p_pid, p_topics, p_concurrency, p_version,
            p_heartbeat_ms)
    RETURNING *;
$$;

-- A registered worker says it is alive and how many jobs it holds. No row back: its row
-- is gone (pruned while the worker was cut off), stopped, or another login role's — it
-- registers again. Only the role that registered a row may refresh it.
CREATE OR REPLACE FUNCTION warden.worker_heartbeat(p_worker_id uuid, p_jobs_in_flight integer)
RETURNS SETOF warden.workers
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE warden.workers
       SET last_seen_at = now(), jobs_in_flight = p_jobs_in_flight
     WHERE worker_id = p_worker_id AND stopped_at IS NULL AND role_name = session_user
    RETURNING *;
$$;

-- A worker's clean exit: its row is kept for a day as stopped, so operators see that it
-- left. Only the role that registered the row may stop it.
CREATE OR REPLACE FUNCTION warden.worker_stop(p_worker_id uuid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE warden.workers
       SET stopped_at = now(), last_seen_at = now(), jobs_in_flight = 0
     WHERE worker_id = p_worker_id AND stopped_at IS NULL AND role_name = session_user;
$$;

-- sql/grants/20_privileges.sql
GRANT EXECUTE ON FUNCTION
    warden.worker_register(text, text, integer, text[], integer, text, integer),
    warden.worker_heartbeat(uuid, integer), warden.worker_stop(uuid)
    TO warden_worker, warden_engine;
GRANT SELECT ON warden.workers TO warden_engine, warden_auditor;
RESET ROLE;  -- alembic records the revision as the migrating role
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP FUNCTION warden.worker_stop(uuid);
DROP FUNCTION warden.worker_heartbeat(uuid, integer);
DROP FUNCTION warden.worker_register(text, text, integer, text[], integer, text, integer);
DROP INDEX warden.jobs_by_started;
DROP TABLE warden.workers;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
