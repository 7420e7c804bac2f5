-- Extends a held lease (never past the attempt's deadline, timeout_ms after its start)
-- and stores the checkpoint if one is given; returns the new expiry. Fenced
-- (warden.lease_held): raises WD001 / WD002 / WD404 once the lease is gone, which is how a
-- worker learns that its run was cancelled.
CREATE OR REPLACE FUNCTION warden.heartbeat_job(
    job_id text, lease_token uuid, extend interval, checkpoint jsonb DEFAULT NULL
) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET lease_expires_at = least(warden.now() + extend, coalesce(t.deadline_at, 'infinity')),
           checkpoint = coalesce(heartbeat_job.checkpoint, t.checkpoint)
     WHERE t.job_id = heartbeat_job.job_id
       AND warden.lease_held(t, heartbeat_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(heartbeat_job.job_id);
    END IF;
    IF heartbeat_job.checkpoint IS NOT NULL THEN
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.checkpointed',
            j.step_id, j.job_id, j.attempt, j.worker, jsonb_build_object(
                'bytes', octet_length(heartbeat_job.checkpoint::text),
                'sha256', encode(sha256(convert_to(heartbeat_job.checkpoint::text, 'UTF8')),
                                 'hex')));
    END IF;
    RETURN j.lease_expires_at;
END $$;
