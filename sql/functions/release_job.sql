-- A worker that stops gives its job back: the attempt ends (fenced by the lease token
-- like every worker write) and the next one is scheduled at once. A release is the
-- worker's decision, not the job's failure: the step's max_attempts grows by one so the
-- released attempt is not counted against its retries.
CREATE OR REPLACE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_err jsonb;
BEGIN
    v_err := jsonb_build_object('type', 'Released', 'message', release_job.reason);
    UPDATE warden.jobs t
       SET status = 'failed', error = v_err, finished_at = warden.now()
     WHERE t.job_id = release_job.job_id AND warden.lease_held(t, release_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(release_job.job_id);
    END IF;
    PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.failed', j.step_id,
        j.job_id, j.attempt, j.worker, jsonb_build_object('error', v_err, 'released', true));
    IF j.item_index IS NOT NULL THEN  -- a for_each item: the item's count, not the step's
        UPDATE warden.step_items SET max_attempts = max_attempts + 1
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND status = 'running';
        PERFORM warden.end_attempt(j, 'failed', v_err, true);
        UPDATE warden.step_items SET retry_at = warden.now()
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND retry_at IS NOT NULL;
        RETURN;
    END IF;
    UPDATE warden.steps SET max_attempts = max_attempts + 1
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.end_attempt(j, 'failed', v_err, true);
    UPDATE warden.steps SET retry_at = warden.now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND retry_at IS NOT NULL;
END $$;
