"""Reruns ask again: approvals bar every starter of the rerun chain, belong to their own
run, and never change what they are about.

Revision ID: 0003_rerun_approvals
Revises: 0002_least_privilege
Create Date: 2026-12-06

Frozen (docs/contributing.md). A rerun runs gated steps again under approvals of its own
(docs/recovery.md), so an approval records who may never decide it: ``barred``, the
starters of every run in its rerun chain, set at insert by a trigger
(approval_bar_rerun_chain) and checked by approvals_no_rerun_chain_approval. A policy
approval's job must be a job of its own run and step. approval_frozen refuses any change
to an approval's identity columns, and any change at all once it is decided. The policy
activations and snapshots refuse TRUNCATE like the decisions.

Existing approvals: pending ones get the whole chain of their run; decided, expired and
superseded ones get their starter only, the rule they were decided under (which
approvals_no_self_approval already enforced), so no past decision is rewritten.
"""

from alembic import op

revision = "0003_rerun_approvals"
down_revision = "0002_least_privilege"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- sql/schema/30_approvals.sql
ALTER TABLE warden.approvals ADD COLUMN barred text[];
UPDATE warden.approvals SET barred = ARRAY[requested_by] WHERE status <> 'pending';
UPDATE warden.approvals a SET barred = (
    WITH RECURSIVE chain (run_id, rerun_of, created_by) AS (
        SELECT r.run_id, r.rerun_of, r.created_by FROM warden.runs r
         WHERE r.tenant_id = a.tenant_id AND r.run_id = a.run_id
        UNION
        SELECT r.run_id, r.rerun_of, r.created_by
          FROM chain c JOIN warden.runs r ON r.tenant_id = a.tenant_id AND r.run_id = c.rerun_of
    )
    SELECT array_agg(DISTINCT p ORDER BY p)
      FROM (SELECT created_by FROM chain UNION ALL SELECT a.requested_by) AS named (p))
 WHERE a.status = 'pending';
ALTER TABLE warden.approvals ALTER COLUMN barred SET NOT NULL;
ALTER TABLE warden.approvals
    ADD CONSTRAINT approvals_job_of_own_run FOREIGN KEY (tenant_id, job_id)
        REFERENCES warden.jobs (tenant_id, job_id),
    ADD CONSTRAINT approvals_job_of_own_step CHECK (
        job_id IS NULL OR starts_with(job_id, run_id::text || ':' || step_id || '@')),
    ADD CONSTRAINT approvals_job_iff_policy CHECK ((job_id IS NOT NULL) = (kind = 'policy')),
    ADD CONSTRAINT approvals_starter_barred CHECK (requested_by = ANY (barred)),
    ADD CONSTRAINT approvals_no_rerun_chain_approval CHECK (
        decided_by IS NULL OR NOT decided_by = ANY (barred));

-- sql/functions/approval_bar_rerun_chain.sql
-- Before an approval is stored (sql/triggers/approvals.sql): requested_by must be whoever
-- started its run, and barred becomes every principal that started a run of the rerun
-- chain (the run, the run it reruns, and so on back to the original), together with any
-- names the inserter passed. An inserter can bar more principals, never fewer. The
-- constraint approvals_no_rerun_chain_approval then refuses a decision by any of them.
CREATE OR REPLACE FUNCTION warden.approval_bar_rerun_chain() RETURNS trigger
-- as the owner: row-level security must never hide an ancestor run from the walk below
-- (the inserting engine session is scoped to one tenant, but a smaller `barred` would let
-- a starter decide)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    starter text;
    starters text[];
BEGIN
    SELECT created_by INTO starter FROM warden.runs
     WHERE tenant_id = NEW.tenant_id AND run_id = NEW.run_id;
    IF NOT FOUND THEN
        RETURN NEW;  -- no such run: the foreign key to its step refuses the row
    END IF;
    IF NEW.requested_by IS DISTINCT FROM starter THEN
        RAISE EXCEPTION 'an approval of run % is requested by %, who started it, not by %',
            NEW.run_id, starter, NEW.requested_by USING ERRCODE = 'WD010';
    END IF;
    -- UNION, not UNION ALL: were rerun_of ever to form a cycle, the walk ends instead of
    -- looping. A rerun is always of the same tenant.
    WITH RECURSIVE chain (run_id, rerun_of, created_by) AS (
        SELECT r.run_id, r.rerun_of, r.created_by FROM warden.runs r
         WHERE r.tenant_id = NEW.tenant_id AND r.run_id = NEW.run_id
        UNION
        SELECT r.run_id, r.rerun_of, r.created_by
          FROM chain c JOIN warden.runs r ON r.tenant_id = NEW.tenant_id AND r.run_id = c.rerun_of
    )
    SELECT array_agg(DISTINCT p ORDER BY p) INTO starters
      FROM (SELECT created_by FROM chain
            UNION ALL SELECT unnest(coalesce(NEW.barred, '{}'))) AS named (p)
     WHERE p IS NOT NULL;
    NEW.barred := starters;
    RETURN NEW;
END $$;

-- sql/functions/approval_frozen.sql
-- Before any UPDATE of an approval (sql/triggers/approvals.sql). A pending approval may
-- only be decided or closed: status, decided_by, decided_at and reason change, nothing
-- else, so the statement that records a decision cannot also re-point the approval at
-- another run, step, job or job hash, or change who requested it or who is barred from
-- deciding it. A decided, expired or superseded approval never changes again: the first
-- decision stands, whoever asks.
CREATE OR REPLACE FUNCTION warden.approval_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text[];
BEGIN
    IF OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'approval % is already %: it never changes again',
            OLD.approval_id, OLD.status USING ERRCODE = 'WD010';
    END IF;
    changed := array_remove(ARRAY[
        CASE WHEN NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN 'tenant_id' END,
        CASE WHEN NEW.approval_id IS DISTINCT FROM OLD.approval_id THEN 'approval_id' END,
        CASE WHEN NEW.run_id IS DISTINCT FROM OLD.run_id THEN 'run_id' END,
        CASE WHEN NEW.step_id IS DISTINCT FROM OLD.step_id THEN 'step_id' END,
        CASE WHEN NEW.job_id IS DISTINCT FROM OLD.job_id THEN 'job_id' END,
        CASE WHEN NEW.kind IS DISTINCT FROM OLD.kind THEN 'kind' END,
        CASE WHEN NEW.policy_snapshot_hash IS DISTINCT FROM OLD.policy_snapshot_hash
             THEN 'policy_snapshot_hash' END,
        CASE WHEN NEW.job_hash IS DISTINCT FROM OLD.job_hash THEN 'job_hash' END,
        CASE WHEN NEW.requested_by IS DISTINCT FROM OLD.requested_by THEN 'requested_by' END,
        CASE WHEN NEW.requested_at IS DISTINCT FROM OLD.requested_at THEN 'requested_at' END,
        CASE WHEN NEW.expires_at IS DISTINCT FROM OLD.expires_at THEN 'expires_at' END,
        CASE WHEN NEW.barred IS DISTINCT FROM OLD.barred THEN 'barred' END], NULL);
    IF cardinality(changed) > 0 THEN
        RAISE EXCEPTION 'approval %: % never change after insert (only status, decided_by, '
            'decided_at and reason do)', OLD.approval_id, array_to_string(changed, ', ')
            USING ERRCODE = 'WD010';
    END IF;
    RETURN NEW;
END $$;

-- sql/triggers/approvals.sql
-- Approvals (sql/schema/30_approvals.sql): who may never decide one is fixed at insert,
-- from the rerun chain of its run; what it is about never changes afterwards, and once
-- decided, expired or superseded it does not change at all.
CREATE OR REPLACE TRIGGER approvals_bar_rerun_chain BEFORE INSERT ON warden.approvals
    FOR EACH ROW EXECUTE FUNCTION warden.approval_bar_rerun_chain();
CREATE OR REPLACE TRIGGER approvals_frozen BEFORE UPDATE ON warden.approvals
    FOR EACH ROW EXECUTE FUNCTION warden.approval_frozen();

-- sql/triggers/append_only.sql
CREATE OR REPLACE TRIGGER policy_activations_no_truncate
    BEFORE TRUNCATE ON warden.policy_activations
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_snapshots_no_truncate BEFORE TRUNCATE ON warden.policy_snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
RESET ROLE;  -- alembic records the revision as the migrating role
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP TRIGGER policy_snapshots_no_truncate ON warden.policy_snapshots;
DROP TRIGGER policy_activations_no_truncate ON warden.policy_activations;
DROP TRIGGER approvals_frozen ON warden.approvals;
DROP TRIGGER approvals_bar_rerun_chain ON warden.approvals;
DROP FUNCTION warden.approval_frozen();
DROP FUNCTION warden.approval_bar_rerun_chain();
ALTER TABLE warden.approvals
    DROP CONSTRAINT approvals_no_rerun_chain_approval,
    DROP CONSTRAINT approvals_starter_barred,
    DROP CONSTRAINT approvals_job_iff_policy,
    DROP CONSTRAINT approvals_job_of_own_step,
    DROP CONSTRAINT approvals_job_of_own_run,
    DROP COLUMN barred;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
