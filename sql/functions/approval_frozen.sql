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
