-- Claims up to max_jobs claimable jobs of the given topics for `worker`, leasing each
-- for `lease` (never past the attempt's timeout), and returns what the worker needs.
-- The job protocol's entry point for workers in any language (docs/sql-worker.md).
--
-- Claimable: pending, available_at reached, of a tenant and topic the login role is
-- granted (warden.worker_grants), and dispatched under the policy snapshot that is still
-- its tenant's active one (a drifted job is skipped here and re-evaluated by the
-- scheduler, which the activation woke), and whose gates are open: fewer than
-- concurrency_limit jobs of its tenant and concurrency_key running, fewer than rate_limit
-- claims of its tenant and rate_key in the last rate_per_ms (a job over a limit stays
-- pending, in its place). Order: each tenant's best job before anyone's second (fair
-- tenants), then priority (run priority * 10 + step priority), then available_at.
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
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call, as complete_jobs: a custom plan per statement per call
-- cost ~0.6 ms of a ~0.9 ms claim of one job, paid on every claim (bench/README.md)
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    c            record;
    l            record;
    i            integer;
    v_topic      text;
    v_lock       bigint;
    v_now        timestamptz := warden.now();
    v_run_status warden.run_status;
    v_tenant     text;
    v_run        uuid;
    -- the current run's events, and every run's entry ({tenant_id, run_id, events}) for the
    -- one append at the end: arrays, appended in place. A jsonb array grown by `||` is
    -- copied whole at each step, n^2 for a claim of n jobs of one run (bench/README.md,
    -- session 18: 24 us a job at 32, 235 us at 500)
    a_events     jsonb[];
    -- every lane with pending jobs (a topic, a tenant, its gate keys and their limits)
    a_topic      text[] := '{}';
    a_tenant     text[] := '{}';
    a_ckey       text[] := '{}';
    a_climit     integer[] := '{}';
    a_rkey       text[] := '{}';
    a_rlimit     integer[] := '{}';
    a_rper       integer[] := '{}';
    a_fp         smallint[] := '{}';  -- each lane's claim floor: priority, available_at
    a_fa         timestamptz[] := '{}';
    -- the lanes this claim takes from, and how many jobs each
    l_topic      text[] := '{}';
    l_tenant     text[] := '{}';
    l_ckey       text[] := '{}';
    l_rkey       text[] := '{}';
    l_cap        integer[] := '{}';
    l_fp         smallint[] := '{}';
    l_fa         timestamptz[] := '{}';
    -- per gate ('c' or 'r', tenant, key, joined by U+001F): what is in use (running jobs,
    -- or claims inside the window) and how many more this claim may take
    v_used       jsonb := '{}';
    v_caps       jsonb := '{}';
    v_gate       text;
    v_n          integer;
    v_cap        integer;
    -- per concurrency gate: the stripe of each job this claim may add (a JSON array)
    v_slots      jsonb := '{}';
    v_stripes    jsonb;
    v_stripe     integer;
    v_start      integer;
    a_batch      jsonb[] := '{}';
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    -- 0. The grants lock, shared, to commit: a change of the grants waits for this claim,
    -- and then ends the leases it handed out that the change no longer covers
    -- (sql/functions/end_ungranted_leases.sql); a claim that starts during the change
    -- waits for it and reads the grants as it leaves them. Never waited for while this
    -- claim holds any other lock.
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('g' || chr(31) || 'worker_grants', 14));
    -- 1. The lanes with pending jobs. Each lane (a tenant and its gate keys) is found by a
    -- loose scan of its claim marks, newest first (one probe per lane), and its first
    -- pending job by one probe of jobs_claimable that starts at the lane's claim floor
    -- (sql/schema/22_claim_marks.sql): never in front of it, where the entries of the jobs
    -- claimed since the floor last moved lie, and pile up while any old snapshot is open.
    -- Walking lanes rather than one ordered list is what lets a job behind a closed gate,
    -- or behind another tenant's backlog, be claimed
    -- (docs/workflows.md#concurrency-and-rate-limits).
    FOREACH v_topic IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(claim_jobs.topics) AS u) LOOP
        FOR l IN
            WITH RECURSIVE lane AS (
                (SELECT m.tenant_id, m.concurrency_key, m.rate_key
                   FROM warden.claim_marks m
                  WHERE m.topic = v_topic
                  ORDER BY m.tenant_id DESC, m.concurrency_key DESC, m.rate_key DESC,
                           m.epoch DESC
                  LIMIT 1)
                UNION ALL
                SELECT n.* FROM lane p CROSS JOIN LATERAL (
                    SELECT m.tenant_id, m.concurrency_key, m.rate_key
                      FROM warden.claim_marks m
                     WHERE m.topic = v_topic
                       AND (m.tenant_id, m.concurrency_key, m.rate_key)
                           < (p.tenant_id, p.concurrency_key, p.rate_key)
                     ORDER BY m.tenant_id DESC, m.concurrency_key DESC, m.rate_key DESC,
                              m.epoch DESC
                     LIMIT 1) n
            )
            SELECT lane.tenant_id, lane.concurrency_key, lane.rate_key, f.priority AS fp,
                   f.available_at AS fa, j.concurrency_limit, j.rate_limit, j.rate_per_ms
              FROM lane
             CROSS JOIN LATERAL warden.claim_floor(v_topic, lane.tenant_id,
                                                  lane.concurrency_key, lane.rate_key) f
             CROSS JOIN LATERAL (
                   SELECT j.concurrency_limit, j.rate_limit, j.rate_per_ms
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = v_topic
                      AND j.tenant_id = lane.tenant_id
                      AND j.concurrency_key = lane.concurrency_key
                      AND j.rate_key = lane.rate_key
                      AND (j.priority, j.available_at) >= (f.priority, f.available_at)
                    ORDER BY j.priority, j.available_at
                    LIMIT 1) j
             -- only what the login role is granted (warden.worker_grants)
             WHERE f.available_at < 'infinity' AND warden.granted(lane.tenant_id, v_topic)
        LOOP
            a_topic := a_topic || v_topic;
            a_tenant := a_tenant || l.tenant_id;
            a_ckey := a_ckey || l.concurrency_key;
            a_climit := a_climit || l.concurrency_limit;
            a_rkey := a_rkey || l.rate_key;
            a_rlimit := a_rlimit || l.rate_limit;
            a_rper := a_rper || l.rate_per_ms;
            a_fp := a_fp || l.fp;
            a_fa := a_fa || l.fa;
        END LOOP;
    END LOOP;
    -- 2. Rate gates: each count is exact because it is taken under a transaction-level
    -- advisory lock on the gate (tenant and key), held to commit: the next claimer of the
    -- key counts only after this claim's claims are committed (a new snapshot per
    -- statement, READ COMMITTED). These are waited for after the grants lock (0.) and
    -- before any other, in one global order (by lock id), so claimers never wait on each
    -- other in a cycle and nobody holding a run lock ever waits for one.
    FOR v_lock IN
        SELECT DISTINCT hashtextextended(concat_ws(chr(31), 'r', t, k), 14)
          FROM unnest(a_tenant, a_rkey) AS x(t, k)
         WHERE k <> ''
         ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
    -- 3. Concurrency keys: a key's limit L is split over least(L, 16) stripes (stripe s
    -- holds L / 16, plus one for s < L % 16: together exactly L), each counted under an
    -- advisory lock of its own, and each claimed job records its stripe. Claimers of one
    -- key then work in parallel on different stripes instead of queueing through one lock
    -- and its commit (bench/claim_gates.py). Stripe locks are only tried, never waited
    -- for, starting at a random stripe, until this claim has room for max_jobs; a claim
    -- that gets no stripe gets nothing of that key this time (its worker polls again).
    -- Completion, failure, reaping and cancellation take no lock: a job that is no
    -- longer running is no longer counted. Lanes of one key may carry different limits
    -- (two workflow versions): the smallest one met bounds them all.
    FOR l IN
        SELECT t AS tenant_id, k AS ckey, min(n) AS lim
          FROM unnest(a_tenant, a_ckey, a_climit) AS x(t, k, n)
         WHERE k <> ''
         GROUP BY t, k
    LOOP
        v_gate := concat_ws(chr(31), 'c', l.tenant_id, l.ckey);
        v_stripes := '[]';
        v_n := least(l.lim, 16);  -- stripes
        v_start := floor(random() * v_n)::integer;
        FOR i IN 0 .. v_n - 1 LOOP
            v_stripe := (v_start + i) % v_n;
            v_cap := l.lim / 16 + CASE WHEN v_stripe < l.lim % 16 THEN 1 ELSE 0 END;
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(
                hashtextextended(concat_ws(chr(31), v_gate, v_stripe), 14));
            SELECT v_cap - count(*) INTO v_cap FROM (
                SELECT 1 FROM warden.jobs r
                 WHERE r.tenant_id = l.tenant_id AND r.concurrency_key = l.ckey
                   AND r.concurrency_stripe = v_stripe AND r.status = 'running'
                 LIMIT v_cap) z;
            IF v_cap > 0 THEN
                v_stripes := v_stripes || to_jsonb(array_fill(v_stripe, ARRAY[v_cap]));
            END IF;
            EXIT WHEN jsonb_array_length(v_stripes) >= claim_jobs.max_jobs;
        END LOOP;
        v_caps := v_caps || jsonb_build_object(v_gate, jsonb_array_length(v_stripes));
        v_slots := v_slots || jsonb_build_object(v_gate, v_stripes);
    END LOOP;
    -- 4. How many jobs each lane may give: max_jobs, or less where its gates are fuller.
    FOR i IN 1 .. coalesce(array_length(a_topic, 1), 0) LOOP
        v_cap := claim_jobs.max_jobs;
        IF a_ckey[i] <> '' THEN
            v_cap := least(v_cap, (v_caps ->> concat_ws(chr(31), 'c', a_tenant[i],
                                                        a_ckey[i]))::integer);
        END IF;
        IF a_rkey[i] <> '' THEN
            v_gate := concat_ws(chr(31), 'r', a_tenant[i], a_rkey[i]);
            IF v_used -> v_gate IS NULL THEN
                SELECT count(*) INTO v_n FROM (
                    SELECT 1 FROM warden.jobs r
                     WHERE r.tenant_id = a_tenant[i] AND r.rate_key = a_rkey[i]
                       AND r.started_at > v_now - make_interval(secs => a_rper[i] / 1000.0)
                     LIMIT a_rlimit[i]) z;
                v_used := v_used || jsonb_build_object(v_gate, v_n);
            END IF;
            v_n := least(coalesce((v_caps ->> v_gate)::integer, 2147483647),
                         greatest(a_rlimit[i] - (v_used ->> v_gate)::integer, 0));
            v_caps := v_caps || jsonb_build_object(v_gate, v_n);
            v_cap := least(v_cap, v_n);
        END IF;
        IF v_cap > 0 THEN
            l_topic := l_topic || a_topic[i];
            l_tenant := l_tenant || a_tenant[i];
            l_ckey := l_ckey || a_ckey[i];
            l_rkey := l_rkey || a_rkey[i];
            l_cap := l_cap || v_cap;
            l_fp := l_fp || a_fp[i];
            l_fa := l_fa || a_fa[i];
        END IF;
    END LOOP;
    FOR c IN
        -- 5. Up to `cap` jobs of each open lane in (priority, available_at) order, one
        -- index walk each from the lane's floor that LIMIT stops early. SKIP LOCKED:
        -- concurrent claimers take disjoint rows instead of queueing behind each other;
        -- rows the filters below drop are unlocked at commit, claimable again at once.
        WITH lanes AS (
            SELECT * FROM unnest(l_topic, l_tenant, l_ckey, l_rkey, l_cap, l_fp, l_fa)
                       AS x(topic, tenant_id, ckey, rkey, cap, fp, fa)
        ), candidates AS (
            SELECT p.*
              FROM lanes ln
             CROSS JOIN LATERAL (
                   SELECT j.tenant_id, j.job_id, j.priority, j.available_at,
                          j.concurrency_key, j.rate_key
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = ln.topic
                      AND j.tenant_id = ln.tenant_id AND j.concurrency_key = ln.ckey
                      AND j.rate_key = ln.rkey
                      -- from the lane's claim floor as step 1 read it: an advance since
                      -- only raised it to a job still pending; a job made pending below
                      -- it since is the next claim's, as if it had come a moment later
                      AND (j.priority, j.available_at) >= (ln.fp, ln.fa)
                      AND j.available_at <= v_now
                      -- decided under the tenant's active snapshot. Keyed on the lane's
                      -- tenant, not the row's, the lookup is an InitPlan: one
                      -- primary-key probe per lane, where the row's made it one per
                      -- candidate (bench/README.md, session 17)
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = ln.tenant_id)
                    ORDER BY j.priority, j.available_at
                    LIMIT ln.cap
                      FOR UPDATE OF j SKIP LOCKED) p
        ), keyed AS (
            -- several lanes (topics, rate keys) may share one key: its capacity is shared
            SELECT k.*,
                   row_number() OVER (PARTITION BY k.tenant_id, k.concurrency_key
                                      ORDER BY k.priority, k.available_at, k.job_id) AS n_c,
                   row_number() OVER (PARTITION BY k.tenant_id, k.rate_key
                                      ORDER BY k.priority, k.available_at, k.job_id) AS n_r
              FROM candidates k
        ), allowed AS (
            -- fair tenants: each tenant's best job ranks 1, its second 2, ...; a batch
            -- takes every tenant's rank 1 before anyone's rank 2, so one tenant's backlog
            -- delays another tenant's job by at most one batch
            SELECT a.*, row_number() OVER (PARTITION BY a.tenant_id
                                           ORDER BY a.priority, a.available_at) AS n_t
              FROM keyed a
             WHERE (a.concurrency_key = '' OR a.n_c <= (v_caps ->> concat_ws(
                        chr(31), 'c', a.tenant_id, a.concurrency_key))::integer)
               AND (a.rate_key = '' OR a.n_r <= (v_caps ->> concat_ws(
                        chr(31), 'r', a.tenant_id, a.rate_key))::integer)
        ), picked AS (
            SELECT f.tenant_id, f.job_id, f.concurrency_key, f.n_c FROM allowed f
             ORDER BY f.n_t, f.priority, f.available_at
             LIMIT claim_jobs.max_jobs
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = v_now,
                   -- the login role the lease is handed to: the fence's (lease_held_at)
                   lease_role = session_user::text,
                   -- the n-th job of a key takes the n-th free place of the stripes held
                   concurrency_stripe = CASE WHEN p.concurrency_key <> '' THEN
                       (v_slots -> concat_ws(chr(31), 'c', p.tenant_id, p.concurrency_key)
                                ->> (p.n_c - 1)::integer)::smallint END,
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
        -- appended in one call at its end (append_events_for_runs_unscoped: one INSERT;
        -- unscoped, as a worker session carries no tenant scope: the grants were checked
        -- above), not once per claimed job: a fan-out's workers and its scheduler would
        -- queue on the run row for each.
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                a_batch := a_batch || jsonb_build_object(
                    'tenant_id', v_tenant, 'run_id', v_run, 'events', to_jsonb(a_events));
            END IF;
            v_tenant := c.tenant_id;
            v_run := c.run_id;
            a_events := '{}';
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
            a_events := a_events || jsonb_build_object(
                'kind', 'job.cancelled', 'step_id', c.step_id, 'job_id', c.job_id,
                'attempt', c.attempt, 'actor', claim_jobs.worker,
                'data', jsonb_build_object('reason', 'run ended before the claim completed'));
            CONTINUE;
        END IF;
        a_events := a_events || jsonb_build_object(
            'kind', 'job.claimed', 'step_id', c.step_id, 'job_id', c.job_id,
            'attempt', c.attempt, 'actor', claim_jobs.worker,
            'data', jsonb_build_object('lease_expires_at', c.lease_expires_at));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        available_at := c.available_at; started_at := c.started_at;
        traceparent := c.traceparent;
        RETURN NEXT;
    END LOOP;
    IF v_run IS NOT NULL THEN
        a_batch := a_batch || jsonb_build_object(
            'tenant_id', v_tenant, 'run_id', v_run, 'events', to_jsonb(a_events));
        PERFORM warden.append_events_for_runs_unscoped(to_jsonb(a_batch));
    END IF;
END $$;
