-- Human checkpoints: an approval step, or a require_approval policy decision, each bound
-- to the policy snapshot and the job hash it was asked under, and to its own run: a rerun
-- asks again with approvals of its own (docs/recovery.md, "Reruns ask again").
--
-- What an approval is about never changes after insert, and a decided approval never
-- changes at all (warden.approval_frozen, sql/triggers/approvals.sql): a decision cannot
-- be re-pointed, in the statement that records it, at other work or other principals.
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
    -- every principal that may never decide it: whoever started its run and whoever
    -- started each run that run reruns, back to the original; set at insert from
    -- warden.runs by warden.approval_bar_rerun_chain, whatever the inserter passed
    barred                text[]                 NOT NULL,
    PRIMARY KEY (tenant_id, approval_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    -- a policy approval holds exactly one job, of its own run and step (jobs_id_format puts
    -- both in job_id): approving it can release nothing of another run
    CONSTRAINT approvals_job_of_own_run FOREIGN KEY (tenant_id, job_id)
        REFERENCES warden.jobs (tenant_id, job_id),
    -- (or of one item of its for_each step: run:step[i]@n; step ids never hold '[')
    CONSTRAINT approvals_job_of_own_step CHECK (
        job_id IS NULL OR starts_with(job_id, run_id::text || ':' || step_id || '@')
        OR starts_with(job_id, run_id::text || ':' || step_id || '[')),
    CONSTRAINT approvals_job_iff_policy CHECK ((job_id IS NOT NULL) = (kind = 'policy')),
    CONSTRAINT approvals_no_self_approval CHECK (decided_by IS NULL OR decided_by <> requested_by),
    CONSTRAINT approvals_starter_barred CHECK (requested_by = ANY (barred)),
    CONSTRAINT approvals_no_rerun_chain_approval CHECK (
        decided_by IS NULL OR NOT decided_by = ANY (barred)),
    CONSTRAINT approvals_decided_iff_closed CHECK ((status = 'pending') = (decided_at IS NULL)),
    CONSTRAINT approvals_human_decision_has_principal CHECK (
        status NOT IN ('approved', 'rejected') OR decided_by IS NOT NULL)
);
-- one pending approval per step, or per item of a for_each step (the item index from the
-- job id it holds: docs/workflows.md#for_each)
CREATE UNIQUE INDEX approvals_one_pending_per_step ON warden.approvals
    (tenant_id, run_id, step_id, coalesce(substring(job_id FROM '\[([0-9]+)\]@'), ''))
    WHERE status = 'pending';
CREATE INDEX approvals_pending_by_expiry ON warden.approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_by_status ON warden.approvals (tenant_id, status, requested_at DESC);
