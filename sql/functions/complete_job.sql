-- Completes one job under its lease token: complete_jobs with a batch of one, raising
-- the fenced outcome as its typed error (raise_fenced) instead of returning it.
CREATE OR REPLACE FUNCTION warden.complete_job(job_id text, lease_token uuid, result jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (SELECT c.outcome FROM warden.complete_jobs(ARRAY[complete_job.job_id],
            ARRAY[complete_job.lease_token], ARRAY[complete_job.result]) c) <> 'completed' THEN
        PERFORM warden.raise_fenced(complete_job.job_id);
    END IF;
END $$;
