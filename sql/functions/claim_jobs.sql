-- Claims up to max_jobs claimable jobs of the given topics for `worker`, leasing each
-- for `lease` (never past the attempt's timeout), and returns what the worker needs.
-- The job protocol's entry point for workers in any language (docs/sql-worker.md).
--
-- Claimable: pending, available_at reached, of a tenant and topic the login role is
-- granted (warden.worker_grants), and dispatched under the policy snapshot that is still
-- its tenant's active one (a drifted job is skipped here and re-evaluated by the
-- scheduler, which the activation woke).
--
-- SECURITY DEFINER, like every worker function: a worker role holds EXECUTE on these and
-- no table privilege at all (sql/grants/20_privileges.sql), so this body is the only way
-- its claims reach warden.jobs. The search_path is fixed and every name qualified, so a
-- caller's objects can never stand in for warden's. available_at and started_at say how
-- long the job waited for this claim; traceparent (NULL unless traces are on) is the W3C
-- parent of the worker's spans for this attempt (docs/sql-worker.md).
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text, available_at timestamptz,
    started_at timestamptz, traceparent text
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    c            record;
    v_now        timestamptz := warden.now();
    v_run_status warden.run_status;
    v_tenant     text;
    v_run        uuid;
    v_events     jsonb;
    v_batch      jsonb := '[]';  -- every run's events, appended in one call at the end
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    FOR c IN
        -- One ordered scan of jobs_claimable per topic: with topic = ANY(topics) the index
        -- cannot give the (priority, available_at) order, so every claim would read and
        -- sort every pending job of its topics. Equality on the leading column gives the
        -- order, and LIMIT stops each scan after max_jobs rows. SKIP LOCKED: concurrent
        -- claimers take disjoint rows instead of queueing behind each other. A worker of
        -- several topics may lock up to max_jobs rows per topic for the length of this
        -- statement; the ones the outer LIMIT drops are unlocked at its commit, claimable
        -- again at once.
        WITH picked AS (
            SELECT p.tenant_id, p.job_id
              FROM (SELECT DISTINCT u.topic FROM unnest(claim_jobs.topics) AS u(topic)) t
             CROSS JOIN LATERAL (
                   SELECT j.tenant_id, j.job_id, j.priority, j.available_at
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = t.topic
                      AND j.available_at <= v_now
                      -- only what the login role is granted (warden.worker_grants)
                      AND warden.granted(j.tenant_id, j.topic)
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
                    ORDER BY j.priority, j.available_at
                    LIMIT claim_jobs.max_jobs
                      FOR UPDATE OF j SKIP LOCKED) p
             ORDER BY p.priority, p.available_at
             LIMIT claim_jobs.max_jobs
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = v_now,
                   deadline_at = v_now + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(v_now + claim_jobs.lease,
                                            v_now + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked in (tenant, run) order: two claimers holding disjoint jobs of
        -- the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        -- Each run is locked once per claim, and the events of all the claim's runs are
        -- appended in one call at its end (warden.append_events_for_runs: one INSERT),
        -- not once per claimed job: a fan-out's workers and its scheduler would queue on
        -- the run row for each.
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                v_batch := v_batch || jsonb_build_array(jsonb_build_object(
                    'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
            END IF;
            v_tenant := c.tenant_id;
            v_run := c.run_id;
            v_events := '[]';
            -- under the run's lock: a run cancelled (or otherwise ended) while this claim
            -- waited does not hand its job out; the job ends cancelled instead
            SELECT r.status INTO v_run_status FROM warden.runs r
             WHERE r.tenant_id = c.tenant_id AND r.run_id = c.run_id
               FOR NO KEY UPDATE;
        END IF;
        IF v_run_status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out') THEN
            UPDATE warden.jobs j SET status = 'cancelled', finished_at = v_now,
                   error = jsonb_build_object('type', 'RunEnded', 'run_status', v_run_status)
             WHERE j.tenant_id = c.tenant_id AND j.job_id = c.job_id;
            v_events := v_events || jsonb_build_array(jsonb_build_object(
                'kind', 'job.cancelled', 'step_id', c.step_id, 'job_id', c.job_id,
                'attempt', c.attempt, 'actor', claim_jobs.worker,
                'data', jsonb_build_object('reason', 'run ended before the claim completed')));
            CONTINUE;
        END IF;
        v_events := v_events || jsonb_build_array(jsonb_build_object(
            'kind', 'job.claimed', 'step_id', c.step_id, 'job_id', c.job_id,
            'attempt', c.attempt, 'actor', claim_jobs.worker,
            'data', jsonb_build_object('lease_expires_at', c.lease_expires_at)));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        available_at := c.available_at; started_at := c.started_at;
        traceparent := c.traceparent;
        RETURN NEXT;
    END LOOP;
    IF v_run IS NOT NULL THEN
        v_batch := v_batch || jsonb_build_array(jsonb_build_object(
            'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
        PERFORM warden.append_events_for_runs(v_batch);
    END IF;
END $$;
