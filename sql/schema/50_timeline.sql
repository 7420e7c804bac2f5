-- The append-only, hash-chained history of every run (docs/dba.md). seq is gapless per
-- run and assigned under the run's row lock, so it follows commit order; each event's
-- hash is an HMAC-SHA-256, under the chain key key_id (sql/schema/55_chain_keys.sql), of
-- the previous hash and the event (warden.event_message). UPDATE, DELETE and TRUNCATE are
-- refused by triggers (sql/triggers/append_only.sql) and by privileges.
--
-- Partitioned by month of the *run's* creation (run_created_at, copied from runs.created_at
-- by warden.append_events, the only writer): all of a run's events sit in one partition,
-- so retention drops whole runs and never deletes a row (docs/dba.md, "Partitions and
-- retention"). No role but the owner may insert here, and no role but the owner may change
-- runs.created_at, so (tenant_id, run_id) determines run_created_at and the primary key,
-- which must hold the partition key, still makes (tenant_id, run_id, seq) unique.
CREATE TABLE warden.timeline (
    tenant_id  text                 NOT NULL,
    run_id     uuid                 NOT NULL,
    seq        bigint               NOT NULL CHECK (seq >= 1),
    at         timestamptz          NOT NULL,
    kind       warden.timeline_kind NOT NULL,
    step_id    text,
    job_id     text,
    attempt    integer,
    actor      text,
    data       jsonb                NOT NULL DEFAULT '{}',
    prev_hash  text                 NOT NULL,
    hash       text                 NOT NULL,
    -- the chain key that signed this event (warden.chain_keys; kept after a rotation)
    key_id     integer              NOT NULL,
    -- the run's created_at: the partition key (monthly partitions, warden.create_partitions)
    run_created_at timestamptz      NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq, run_created_at)
) PARTITION BY RANGE (run_created_at);
CREATE INDEX timeline_by_job ON warden.timeline (tenant_id, job_id) WHERE job_id IS NOT NULL;
CREATE INDEX timeline_by_time ON warden.timeline (at);
REVOKE UPDATE, DELETE, TRUNCATE ON warden.timeline FROM PUBLIC;
