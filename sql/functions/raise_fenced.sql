-- Raises the typed error of a fenced single-job write, one SQLSTATE per outcome of
-- warden.fence_outcome: WD001 lease_lost, WD002 cancelled, WD003 not_found (no such job,
-- or not the caller's to touch). engine/store/connection.py maps each to LeaseLost
-- carrying the same outcome complete_jobs would have returned.
CREATE OR REPLACE FUNCTION warden.raise_fenced(p_job_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_outcome text := warden.fence_outcome(p_job_id);
BEGIN
    IF v_outcome = 'not_found' THEN
        RAISE EXCEPTION 'job % not found', p_job_id USING ERRCODE = 'WD003';
    ELSIF v_outcome = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled', p_job_id USING ERRCODE = 'WD002';
    END IF;
    RAISE EXCEPTION 'lease on job % lost', p_job_id USING ERRCODE = 'WD001';
END $$;
