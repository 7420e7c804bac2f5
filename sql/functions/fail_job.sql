-- Fails one job under its lease token (fenced: warden.lease_held) and schedules the
-- step's next attempt when one is left and the error is retryable (end_attempt).
CREATE OR REPLACE FUNCTION warden.fail_job(job_id text, lease_token uuid, error jsonb,
                                           retryable boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'failed', error = fail_job.error, finished_at = warden.now()
     WHERE t.job_id = fail_job.job_id AND warden.lease_held(t, fail_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(fail_job.job_id);
    END IF;
    PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.failed', j.step_id,
        j.job_id, j.attempt, j.worker, jsonb_build_object('error', fail_job.error,
                                                'retryable', fail_job.retryable));
    PERFORM warden.end_attempt(j, 'failed', fail_job.error, fail_job.retryable);
END $$;
