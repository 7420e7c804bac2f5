-- THE fence (warden.lease_held is this at the database's time): a worker's write to a
-- job lands only while the worker still holds the job's lease — the job is running, the
-- token is the one this claim handed out, and the lease has not expired at `at`, whether
-- or not the reaper has seen it yet — and while its login role is still granted the
-- job's tenant and topic (warden.granted). Every worker write (heartbeat_job,
-- complete_job(s), fail_job, release_job) filters on this and nothing else. A SQL
-- function so the planner inlines it into each UPDATE's WHERE clause: the job is still
-- found by its index (jobs_by_job_id), the fence is evaluated on that row.
-- `at` is the caller's warden.now(), read once: complete_jobs holds it already, and the
-- fence read it again per row of its batch (a PL/pgSQL call each, bench/README.md,
-- session 17).
-- The status is compared as text so that the fence never implies the predicate of the
-- partial index jobs_running_lease: where it did, generic plans made while few jobs were
-- running walked that index (every running job) and filtered each row against the
-- batch, and a completion of 32 jobs cost per running job in the fleet (bench/README.md).
CREATE OR REPLACE FUNCTION warden.lease_held_at(j warden.jobs, presented uuid, at timestamptz)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status::text = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > at AND warden.granted(j.tenant_id, j.topic)
$$;
