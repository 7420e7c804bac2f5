-- A held job is released only with a recorded reason (sql/functions/job_release_justified.sql).
-- A constraint trigger so it can be deferred to commit; WHEN keeps every other job update
-- (claims, completions: the hot path) free of it.
CREATE CONSTRAINT TRIGGER jobs_release_needs_a_reason
    AFTER UPDATE OF status ON warden.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.status = 'blocked' AND NEW.status = 'pending')
    EXECUTE FUNCTION warden.job_release_justified();

-- Claim floors (sql/schema/22_claim_marks.sql): every way a job becomes pending keeps its
-- lane's floor at or below it, in the same transaction. Inserts once per statement, over
-- the statement's new rows; updates only where the WHEN finds a job made pending or moved
-- earlier in claim order (never for a claim, a heartbeat or a completion).
CREATE OR REPLACE TRIGGER jobs_claim_marks_on_insert
    AFTER INSERT ON warden.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION warden.claim_marks_on_insert();
CREATE OR REPLACE TRIGGER jobs_claim_marks_on_update
    AFTER UPDATE ON warden.jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND (
          OLD.status <> 'pending'
          OR (NEW.priority, NEW.available_at) < (OLD.priority, OLD.available_at)
          OR (NEW.topic, NEW.tenant_id, NEW.concurrency_key, NEW.rate_key)
             IS DISTINCT FROM (OLD.topic, OLD.tenant_id, OLD.concurrency_key, OLD.rate_key)))
    EXECUTE FUNCTION warden.claim_marks_on_update();
