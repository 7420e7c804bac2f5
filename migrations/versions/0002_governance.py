"""Governance: policy snapshots, activations, decisions, and the claim-time snapshot guard.

Revision ID: 0002_governance
Revises: 0001_core
Create Date: 2026-11-25

Frozen. A job is claimable only while the policy snapshot recorded at its dispatch is
still its tenant's active one; when the active snapshot changes, the scheduler
re-evaluates the job (allow: runs; require_approval: a new approval supersedes the old;
deny: denied) before any worker can take it.
"""

from alembic import op

revision = "0002_governance"
down_revision = "0001_core"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TYPE warden.policy_decision AS ENUM
    ('allow', 'deny', 'require_approval', 'allow_with_constraints');
CREATE TYPE warden.policy_stage AS ENUM ('submit', 'dispatch');

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
-- configured default decided (recorded in reason).
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
    PRIMARY KEY (tenant_id, decision_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT policy_decisions_job_at_dispatch CHECK ((job_id IS NOT NULL) = (stage = 'dispatch'))
);
CREATE INDEX policy_decisions_by_job ON warden.policy_decisions (tenant_id, job_id)
    WHERE job_id IS NOT NULL;
CREATE INDEX policy_decisions_by_run ON warden.policy_decisions (tenant_id, run_id, decision_id);

-- Decisions and activations are audit records, snapshots are content-addressed: none of
-- them ever changes once written.
CREATE FUNCTION warden.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'WD010';
END $$;
CREATE TRIGGER policy_decisions_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_decisions
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE TRIGGER policy_activations_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_activations
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE TRIGGER policy_snapshots_immutable
    BEFORE UPDATE OR DELETE ON warden.policy_snapshots
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE TRIGGER policy_append_only_no_truncate
    BEFORE TRUNCATE ON warden.policy_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON warden.policy_decisions, warden.policy_activations,
    warden.policy_snapshots FROM PUBLIC;

-- Blocked jobs (held for a policy approval) are found per run by the scheduler's drift check.
CREATE INDEX jobs_awaiting_claim ON warden.jobs (tenant_id, run_id)
    WHERE status IN ('pending', 'blocked');

-- The guard: claimable only under the snapshot the job was dispatched with. The subquery
-- is one primary-key probe per candidate row; a drifted job is skipped here and
-- re-evaluated by the scheduler, which the activation woke.
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c            record;
    v_run_status warden.run_status;
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    FOR c IN
        WITH picked AS (
            SELECT j.tenant_id, j.job_id FROM warden.jobs j
             WHERE j.status = 'pending' AND j.topic = ANY (claim_jobs.topics)
               AND j.available_at <= now()
               AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                   SELECT a.snapshot_hash FROM warden.policy_active a
                    WHERE a.tenant_id = j.tenant_id)
             ORDER BY j.priority, j.available_at
             LIMIT claim_jobs.max_jobs
               FOR UPDATE OF j SKIP LOCKED
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = now(),
                   deadline_at = now() + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(now() + claim_jobs.lease,
                                            now() + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked (by append_event) in (tenant, run) order: two claimers holding
        -- disjoint jobs of the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        -- under the run's lock: a run cancelled (or otherwise ended) while this claim
        -- waited does not hand its job out; the job ends cancelled instead
        SELECT r.status INTO v_run_status FROM warden.runs r
         WHERE r.tenant_id = c.tenant_id AND r.run_id = c.run_id
           FOR NO KEY UPDATE;
        IF v_run_status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out') THEN
            UPDATE warden.jobs j SET status = 'cancelled', finished_at = now(),
                   error = jsonb_build_object('type', 'RunEnded', 'run_status', v_run_status)
             WHERE j.tenant_id = c.tenant_id AND j.job_id = c.job_id;
            PERFORM warden.append_event(c.tenant_id, c.run_id, 'job.cancelled', c.step_id,
                c.job_id, c.attempt, claim_jobs.worker,
                jsonb_build_object('reason', 'run ended before the claim completed'));
            CONTINUE;
        END IF;
        PERFORM warden.append_event(c.tenant_id, c.run_id, 'job.claimed', c.step_id, c.job_id,
            c.attempt, claim_jobs.worker,
            jsonb_build_object('lease_expires_at', c.lease_expires_at));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        RETURN NEXT;
    END LOOP;
END $$;
"""

# The claim_jobs of revision 0001, restored on downgrade (kept here: a revision never
# reads a file a later change may edit).
DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    c record;
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    FOR c IN
        WITH picked AS (
            SELECT j.tenant_id, j.job_id FROM warden.jobs j
             WHERE j.status = 'pending' AND j.topic = ANY (claim_jobs.topics)
               AND j.available_at <= now()
             ORDER BY j.priority, j.available_at
             LIMIT claim_jobs.max_jobs
               FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = now(),
                   deadline_at = now() + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(now() + claim_jobs.lease,
                                            now() + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        PERFORM warden.append_event(c.tenant_id, c.run_id, 'job.claimed', c.step_id, c.job_id,
            c.attempt, claim_jobs.worker,
            jsonb_build_object('lease_expires_at', c.lease_expires_at));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        RETURN NEXT;
    END LOOP;
END $$;

DROP INDEX warden.jobs_awaiting_claim;
DROP TABLE warden.policy_decisions;
DROP TABLE warden.policy_activations;
DROP TABLE warden.policy_active;
DROP TABLE warden.policy_snapshots;
DROP TYPE warden.policy_stage;
DROP TYPE warden.policy_decision;
DROP FUNCTION warden.refuse_change();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
