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
