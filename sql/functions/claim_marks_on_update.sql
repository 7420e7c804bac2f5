-- The trigger function of jobs_claim_marks_on_update (sql/triggers/jobs.sql): a job that
-- becomes pending again (a held job released), or a pending job whose claim key moves
-- earlier, keeps its lane's floor at or below it (warden.lower_claim_mark).
CREATE OR REPLACE FUNCTION warden.claim_marks_on_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM warden.lower_claim_mark(NEW.topic, NEW.tenant_id, NEW.concurrency_key,
                                    NEW.rate_key, NEW.priority, NEW.available_at);
    RETURN NULL;
END $$;
