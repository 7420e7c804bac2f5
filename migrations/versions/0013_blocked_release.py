"""A held job is released only with a recorded reason: a deferred constraint trigger on
warden.jobs refuses blocked -> pending unless the job's policy approval is approved (under
the snapshot the job carries) or an allow decision for the job under that snapshot exists.

Revision ID: 0013_blocked_release
Revises: 0012_hot_path
Create Date: 2026-12-06

Frozen. Closes the gap "releasing a blocked job is the engine's word" (docs/security.md).
"""

from alembic import op

revision = "0013_blocked_release"
down_revision = "0012_hot_path"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- The trigger function of jobs_release_needs_a_reason (sql/triggers/jobs.sql): a job held
-- back for a policy approval (`blocked`) becomes claimable (`pending`) only with a reason
-- the database can see and the audit keeps: its approved policy approval, bound to the
-- snapshot the job now carries, or an allow decision for this very job under that
-- snapshot (the re-evaluation of a drifted job). Either is a row an auditor reads
-- (warden.approval_evidence, warden.job_evidence); a session that may UPDATE warden.jobs
-- cannot release a held job silently, it must leave a record that names who let it go.
--
-- Checked at commit (the trigger is deferred): the engine writes the release and its
-- reason in one transaction, in whichever order its code does.
CREATE OR REPLACE FUNCTION warden.job_release_justified() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- the row as it is at commit: a later update in the same transaction is judged too
    IF NOT EXISTS (SELECT 1 FROM warden.jobs j
                    WHERE j.tenant_id = NEW.tenant_id AND j.job_id = NEW.job_id
                      AND j.status = 'pending') THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM warden.approvals a
                WHERE a.tenant_id = NEW.tenant_id AND a.job_id = NEW.job_id
                  AND a.kind = 'policy' AND a.status = 'approved'
                  AND a.policy_snapshot_hash IS NOT DISTINCT FROM NEW.policy_snapshot_hash)
       OR EXISTS (SELECT 1 FROM warden.policy_decisions d
                   WHERE d.tenant_id = NEW.tenant_id AND d.job_id = NEW.job_id
                     AND d.stage = 'dispatch'
                     AND d.decision IN ('allow', 'allow_with_constraints')
                     AND d.snapshot_hash IS NOT DISTINCT FROM NEW.policy_snapshot_hash) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'job % left blocked with neither an approved policy approval nor an '
                    'allow decision under snapshot %',
        NEW.job_id, coalesce(NEW.policy_snapshot_hash, '(none)')
        USING ERRCODE = 'WD010',
              HINT = 'a held job is released by deciding its approval (warden approvals approve)';
END $$;

-- A held job is released only with a recorded reason (sql/functions/job_release_justified.sql).
-- A constraint trigger so it can be deferred to commit; WHEN keeps every other job update
-- (claims, completions: the hot path) free of it.
CREATE CONSTRAINT TRIGGER jobs_release_needs_a_reason
    AFTER UPDATE OF status ON warden.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.status = 'blocked' AND NEW.status = 'pending')
    EXECUTE FUNCTION warden.job_release_justified();

RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP TRIGGER jobs_release_needs_a_reason ON warden.jobs;
DROP FUNCTION warden.job_release_justified();
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
