-- A held job is released only with a recorded reason (sql/functions/job_release_justified.sql).
-- A constraint trigger so it can be deferred to commit; WHEN keeps every other job update
-- (claims, completions: the hot path) free of it.
CREATE CONSTRAINT TRIGGER jobs_release_needs_a_reason
    AFTER UPDATE OF status ON warden.jobs
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.status = 'blocked' AND NEW.status = 'pending')
    EXECUTE FUNCTION warden.job_release_justified();
