-- Raises the typed error of a fenced single-job write: WD002 cancelled, WD404 not found,
-- WD001 lease lost (engine/store/connection.py maps each to its WardenError).
CREATE OR REPLACE FUNCTION warden.raise_fenced(p_job_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_outcome text := warden.fence_outcome(p_job_id);
BEGIN
    IF v_outcome = 'not_found' THEN
        RAISE EXCEPTION 'job % not found', p_job_id USING ERRCODE = 'WD404';
    ELSIF v_outcome = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled', p_job_id USING ERRCODE = 'WD002';
    END IF;
    RAISE EXCEPTION 'lease on job % lost', p_job_id USING ERRCODE = 'WD001';
END $$;
