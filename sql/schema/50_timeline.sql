-- The append-only, hash-chained history of every run (docs/dba.md). seq is gapless per
-- run and assigned under the run's row lock, so it follows commit order; each event's
-- hash is an HMAC-SHA-256, under the chain key key_id (sql/schema/55_chain_keys.sql), of
-- the previous hash and the event (warden.event_message). UPDATE, DELETE and TRUNCATE are
-- refused by triggers (sql/triggers/append_only.sql) and by privileges.
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
    PRIMARY KEY (tenant_id, run_id, seq)
);
CREATE INDEX timeline_by_job ON warden.timeline (tenant_id, job_id) WHERE job_id IS NOT NULL;
CREATE INDEX timeline_by_time ON warden.timeline (at);
REVOKE UPDATE, DELETE, TRUNCATE ON warden.timeline FROM PUBLIC;
