-- Partitions and retention (docs/dba.md, "Partitions and retention").
--
-- The monthly partitions of the timeline and of policy_decisions live in a schema of
-- their own, on which no role but the owner has USAGE: rows are read and written through
-- the partitioned parents in schema warden, whose privileges and row-level security
-- apply, and no grant on the parents' schema (GRANT ... ON ALL TABLES IN SCHEMA warden)
-- can reach a partition and let a session read around the tenant policies.
CREATE SCHEMA warden_partitions;

-- The runs retention archived: what `warden audit verify` names as archived rather than
-- missing. Written only by warden.retention_drop (owner), in the transaction that drops
-- the runs' partitions; the retention anchor outside the database says the same, signed
-- (engine/runs/anchors.py), so an owner who adds or edits a row here is caught by a verify
-- with the anchors. Append-only (sql/triggers/append_only.sql).
CREATE TABLE warden.archived_runs (
    tenant_id       text        NOT NULL,
    run_id          uuid        NOT NULL,
    workflow_id     text        NOT NULL,
    status          warden.run_status NOT NULL,
    created_by      text        NOT NULL,
    rerun_of        uuid,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    -- the chain head the run had when it was exported and dropped
    timeline_seq    bigint      NOT NULL,
    timeline_hash   text        NOT NULL,
    -- the archive file (its name, as written in the archive directory) and its sha256
    archive         text        NOT NULL,
    archive_sha256  text        NOT NULL CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
    archived_by     text        NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id)
);
REVOKE UPDATE, DELETE, TRUNCATE ON warden.archived_runs FROM PUBLIC;
