-- Human checkpoints: an approval step, or a require_approval policy decision, each bound
-- to the policy snapshot and the job hash it was asked under.
CREATE TABLE warden.approvals (
    tenant_id             text                   NOT NULL,
    approval_id           uuid                   NOT NULL DEFAULT gen_random_uuid(),
    run_id                uuid                   NOT NULL,
    step_id               text                   NOT NULL,
    job_id                text,
    kind                  warden.approval_kind   NOT NULL,
    status                warden.approval_status NOT NULL DEFAULT 'pending',
    policy_snapshot_hash  text,
    job_hash              text,
    -- the principal that started the run: it may never decide this approval
    requested_by          text                   NOT NULL,
    requested_at          timestamptz            NOT NULL DEFAULT now(),
    expires_at            timestamptz,
    decided_by            text,
    decided_at            timestamptz,
    reason                text,
    PRIMARY KEY (tenant_id, approval_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT approvals_no_self_approval CHECK (decided_by IS NULL OR decided_by <> requested_by),
    CONSTRAINT approvals_decided_iff_closed CHECK ((status = 'pending') = (decided_at IS NULL)),
    CONSTRAINT approvals_human_decision_has_principal CHECK (
        status NOT IN ('approved', 'rejected') OR decided_by IS NOT NULL)
);
CREATE UNIQUE INDEX approvals_one_pending_per_step ON warden.approvals (tenant_id, run_id, step_id)
    WHERE status = 'pending';
CREATE INDEX approvals_pending_by_expiry ON warden.approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_by_status ON warden.approvals (tenant_id, status, requested_at DESC);
