-- The trigger function of worker_grants_end_leases (sql/triggers/worker_grants.sql), once
-- per statement that deletes, changes or truncates grants: every running job whose lease
-- was handed to a role that no grant now covers for the job's tenant and topic has its
-- lease end now. From then on the fence refuses that role's heartbeats, completions and
-- failures of the job (lease_lost), and the reaper times the attempt out and schedules
-- its retry for a worker still granted it; a grant taken back and another covering the
-- same jobs given in one transaction ends nothing.
-- The exclusive grants lock first: every claim holds it shared from its start to its
-- commit (sql/functions/claim_jobs.sql), so this waits for the claims that may have read
-- the grants before they changed, and sees their leases (READ COMMITTED: each statement
-- here reads what has committed by then); a claim that starts later waits for this
-- transaction and reads the grants as it leaves them. No claim hands out a lease the
-- change would have ended.
-- SECURITY INVOKER: only the owner (or a superuser) writes warden.worker_grants.
CREATE OR REPLACE FUNCTION warden.end_ungranted_leases() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_now timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('g' || chr(31) || 'worker_grants', 14));
    v_now := warden.now();
    -- jobs_running_lease: the running jobs whose lease has not expired yet
    UPDATE warden.jobs j SET lease_expires_at = v_now
     WHERE j.status = 'running' AND j.lease_expires_at > v_now
       AND j.lease_role IS NOT NULL
       AND NOT warden.granted_to(j.lease_role, j.tenant_id, j.topic);
    RETURN NULL;
END $$;
