-- Governance (docs/policy.md): immutable policy snapshots, the one active snapshot per
-- tenant and every activation, and every decision at every gate. A job is claimable only
-- while the snapshot recorded at its dispatch is still its tenant's active one; when it
-- changes, the scheduler re-evaluates the job before any worker can take it.

-- Immutable, content-addressed: the hash is sha256 of the bundle's canonical JSON.
CREATE TABLE warden.policy_snapshots (
    tenant_id      text        NOT NULL,
    snapshot_hash  text        NOT NULL CHECK (snapshot_hash ~ '^[0-9a-f]{64}$'),
    bundle         jsonb       NOT NULL,
    source         text        NOT NULL,
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, snapshot_hash)
);

-- The one active snapshot per tenant (what claim_jobs compares against).
CREATE TABLE warden.policy_active (
    tenant_id      text        NOT NULL PRIMARY KEY,
    snapshot_hash  text        NOT NULL,
    activated_by   text        NOT NULL,
    activated_at   timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, snapshot_hash)
        REFERENCES warden.policy_snapshots (tenant_id, snapshot_hash)
);

-- Every activation, with the snapshot it replaced: who switched policy, and when.
CREATE TABLE warden.policy_activations (
    tenant_id       text        NOT NULL,
    activation_id   bigint      GENERATED ALWAYS AS IDENTITY,
    snapshot_hash   text        NOT NULL,
    previous_hash   text,
    activated_by    text        NOT NULL,
    activated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, activation_id),
    FOREIGN KEY (tenant_id, snapshot_hash)
        REFERENCES warden.policy_snapshots (tenant_id, snapshot_hash)
);

-- Every decision at every gate. snapshot_hash NULL: no snapshot was active and the
-- configured default decided (recorded in reason). Partitioned by month of its run's
-- creation, like the timeline (sql/schema/50_timeline.sql): the engine writes these rows
-- itself, so the foreign key on (tenant_id, run_id, run_created_at) is what keeps a
-- decision in its run's partition (a decision filed under another month would be dropped
-- with runs it does not belong to, or outlive its own).
CREATE TABLE warden.policy_decisions (
    tenant_id      text                   NOT NULL,
    decision_id    bigint                 GENERATED ALWAYS AS IDENTITY,
    stage          warden.policy_stage    NOT NULL,
    snapshot_hash  text,
    rule           text,
    decision       warden.policy_decision NOT NULL,
    reason         text                   NOT NULL,
    constraints    jsonb                  NOT NULL DEFAULT '{}',
    run_id         uuid                   NOT NULL,
    step_id        text                   NOT NULL,
    job_id         text,
    at             timestamptz            NOT NULL DEFAULT now(),
    -- the run's created_at: the partition key (monthly partitions, warden.create_partitions)
    run_created_at timestamptz            NOT NULL,
    PRIMARY KEY (tenant_id, decision_id, run_created_at),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT policy_decisions_run_partition FOREIGN KEY (tenant_id, run_id, run_created_at)
        REFERENCES warden.runs (tenant_id, run_id, created_at),
    CONSTRAINT policy_decisions_job_at_dispatch CHECK ((job_id IS NOT NULL) = (stage = 'dispatch'))
) PARTITION BY RANGE (run_created_at);
CREATE INDEX policy_decisions_by_job ON warden.policy_decisions (tenant_id, job_id)
    WHERE job_id IS NOT NULL;
CREATE INDEX policy_decisions_by_run ON warden.policy_decisions (tenant_id, run_id, decision_id);

-- Decisions and activations are audit records, snapshots are content-addressed: none of
-- them ever changes once written (sql/triggers/append_only.sql).
REVOKE UPDATE, DELETE, TRUNCATE ON warden.policy_decisions, warden.policy_activations,
    warden.policy_snapshots FROM PUBLIC;
