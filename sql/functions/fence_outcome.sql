-- Why a fenced write to p_job_id matched no row, in the one vocabulary every path uses:
-- 'cancelled' (its run was cancelled: stop working on it), 'not_found' (no such job), or
-- 'lease_lost' (expired, reaped, re-claimed, or already finished). A job of a tenant or
-- topic the caller is not granted is 'not_found': its existence is not the caller's to
-- learn. complete_jobs returns these as outcomes; the single-job functions raise them
-- (raise_fenced).
CREATE OR REPLACE FUNCTION warden.fence_outcome(p_job_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT CASE WHEN j.status = 'cancelled' THEN 'cancelled'
                                 ELSE 'lease_lost' END
                       FROM warden.jobs j WHERE j.job_id = p_job_id
                        AND warden.granted(j.tenant_id, j.topic)), 'not_found')
$$;
