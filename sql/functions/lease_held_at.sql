-- THE fence (warden.lease_held is this at the database's time): a worker's write to a
-- job lands only while the worker still holds the job's lease — the job is running, the
-- token is the one this claim handed out, and the lease has not expired at `at`, whether
-- or not the reaper has seen it yet — and only from the login role the claim handed the
-- lease to (jobs.lease_role), whose grants still cover the job: a claim hands out only
-- what the role is granted (warden.granted), and taking a grant back ends the leases it
-- covered at once (warden.end_ungranted_leases). Every worker write (heartbeat_job,
-- complete_job(s), fail_job, release_job) filters on this and nothing else. A SQL
-- function so the planner inlines it into each UPDATE's WHERE clause: the job is still
-- found by its index (jobs_by_job_id), the fence is evaluated on that row.
-- `at` is the caller's warden.now(), read once: complete_jobs holds it already, and the
-- fence read it again per row of its batch (a PL/pgSQL call each, bench/README.md,
-- session 17). The role is compared rather than the grants read per row for the same
-- reason: warden.granted is a PL/pgSQL call, ~14 us of every completed job (session 19).
-- A lease handed out before the role was recorded (lease_role NULL: claimed before
-- migration 0041) is fenced by the grants as it was then.
-- The status is compared as text so that the fence never implies the predicate of the
-- partial index jobs_running_lease: where it did, generic plans made while few jobs were
-- running walked that index (every running job) and filtered each row against the
-- batch, and a completion of 32 jobs cost per running job in the fleet (bench/README.md).
CREATE OR REPLACE FUNCTION warden.lease_held_at(j warden.jobs, presented uuid, at timestamptz)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status::text = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > at
       AND CASE WHEN j.lease_role IS NULL THEN warden.granted(j.tenant_id, j.topic)
                ELSE j.lease_role = session_user::text END
$$;
