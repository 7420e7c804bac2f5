"""Hot path: timeline events of many runs in one INSERT; an event's message inlined.

Revision ID: 0012_hot_path
Revises: 0011_limits_schedules
Create Date: 2026-12-06

Frozen. Adds warden.append_events_for_runs (append_events for several runs at once: the
same locks, chain and partition key, one INSERT of every event and one UPDATE of every
head), executable by warden_engine; warden.complete_jobs and warden.claim_jobs append
their batch's events through it; warden.event_message is declared STABLE (what its body
is) so PostgreSQL inlines it (docs/design.md, "The timeline").
"""

from alembic import op

revision = "0012_hot_path"
down_revision = "0011_limits_schedules"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- The bytes a timeline event's hash signs: the previous hash and the event's fields,
-- separated by U+001F. Times enter as epoch microseconds so the text does not depend on
-- the session's TimeZone or DateStyle; jsonb's text form is canonical. Holds no key: any
-- role may call it (engine/runs/evidence.py computes the same bytes offline).
-- STABLE, not IMMUTABLE: convert_to and concat_ws are stable, and PostgreSQL inlines an
-- SQL function only if its body is no more volatile than it says; inlined, a message
-- costs a fifth of a call (measured: 6,000 messages 32 ms vs 153 ms), on every event.
CREATE OR REPLACE FUNCTION warden.event_message(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')
$$;

-- Appends the events of several runs, each run's in order, with one INSERT for all of
-- them and one UPDATE of all their heads (append_events, set-based: a scheduler pass, a
-- batch start or a batch of completions writes thousands of events at once, and one
-- INSERT per event was most of what the timeline cost). p_batch: a JSON array of
-- {tenant_id, run_id, events}, at most one entry per run, events as append_events takes
-- them ({kind, step_id, job_id, attempt, actor, data}).
--
-- Same chain and same locks as append_events: the runs are locked FOR NO KEY UPDATE in
-- (tenant, run) order (the lock is taken above the sort, so in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.append_events_for_runs(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r         record;
    e         jsonb;
    n         integer := 0;
    h         integer := 0;
    v_seq     bigint;
    v_prev    text;
    v_at      timestamptz;
    v_kind    warden.timeline_kind;
    v_shift   interval;
    v_key     integer;
    v_ipad    bytea;
    v_opad    bytea;
    a_tenant  text[] := '{}';
    a_run     uuid[] := '{}';
    a_seq     bigint[] := '{}';
    a_at      timestamptz[] := '{}';
    a_kind    warden.timeline_kind[] := '{}';
    a_step    text[] := '{}';
    a_job     text[] := '{}';
    a_attempt integer[] := '{}';
    a_actor   text[] := '{}';
    a_data    jsonb[] := '{}';
    a_prev    text[] := '{}';
    a_hash    text[] := '{}';
    a_created timestamptz[] := '{}';  -- each event's partition key: its run's created_at
    h_tenant  text[] := '{}';
    h_run     uuid[] := '{}';
    h_seq     bigint[] := '{}';
    h_hash    text[] := '{}';
BEGIN
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    -- warden.clock_timestamp(), with the clock's shift read once per call, not per event
    -- (sql/functions/clock_timestamp.sql: tests move the database clock)
    v_shift := coalesce((SELECT c.shift FROM warden.clock c), interval '0');
    FOR r IN
        SELECT x.tenant_id, x.run_id, x.events, u.timeline_seq, u.timeline_hash, u.created_at
          FROM jsonb_to_recordset(p_batch) AS x(tenant_id text, run_id uuid, events jsonb)
          JOIN warden.runs u ON u.tenant_id = x.tenant_id AND u.run_id = x.run_id
         WHERE jsonb_array_length(x.events) > 0
         ORDER BY x.tenant_id, x.run_id
           FOR NO KEY UPDATE OF u
    LOOP
        v_seq := r.timeline_seq;
        v_prev := r.timeline_hash;
        FOR e IN SELECT value FROM jsonb_array_elements(r.events) LOOP
            v_seq := v_seq + 1;
            n := n + 1;
            v_at := pg_catalog.clock_timestamp() + v_shift;
            v_kind := (e->>'kind')::warden.timeline_kind;
            a_tenant[n] := r.tenant_id;
            a_run[n] := r.run_id;
            a_created[n] := r.created_at;
            a_seq[n] := v_seq;
            a_at[n] := v_at;
            a_kind[n] := v_kind;
            a_step[n] := e->>'step_id';
            a_job[n] := e->>'job_id';
            a_attempt[n] := (e->>'attempt')::integer;
            a_actor[n] := e->>'actor';
            a_data[n] := coalesce(e->'data', '{}');
            a_prev[n] := v_prev;
            v_prev := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                          v_prev, r.tenant_id, r.run_id, v_seq, v_at, v_kind, a_step[n],
                          a_job[n], a_attempt[n], a_actor[n], a_data[n]))), 'hex');
            a_hash[n] := v_prev;
        END LOOP;
        h := h + 1;
        h_tenant[h] := r.tenant_id;
        h_run[h] := r.run_id;
        h_seq[h] := v_seq;
        h_hash[h] := v_prev;
    END LOOP;
    IF h < (SELECT count(*) FROM jsonb_array_elements(p_batch) b
             WHERE jsonb_array_length(b->'events') > 0) THEN
        RAISE EXCEPTION 'a run of the batch was not found' USING ERRCODE = 'WD404';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt,
                                 actor, data, prev_hash, hash, key_id, run_created_at)
    SELECT t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id, t.job_id, t.attempt,
           t.actor, t.data, t.prev_hash, t.hash, v_key, t.run_created_at
      FROM unnest(a_tenant, a_run, a_seq, a_at, a_kind, a_step, a_job, a_attempt, a_actor,
                  a_data, a_prev, a_hash, a_created)
           AS t(tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data,
                prev_hash, hash, run_created_at);
    UPDATE warden.runs u SET timeline_seq = x.seq, timeline_hash = x.hash
      FROM unnest(h_tenant, h_run, h_seq, h_hash) AS x(tenant_id, run_id, seq, hash)
     WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
END $$;
-- As SECURITY DEFINER it would let any role append to any run: only the roles that write
-- runs may (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.append_events_for_runs(jsonb) TO warden_engine;

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
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    v_events     jsonb;
    -- every lane with pending jobs (a topic, a tenant, its gate keys and their limits)
    a_topic      text[] := '{}';
    a_tenant     text[] := '{}';
    a_ckey       text[] := '{}';
    a_climit     integer[] := '{}';
    a_rkey       text[] := '{}';
    a_rlimit     integer[] := '{}';
    a_rper       integer[] := '{}';
    -- the lanes this claim takes from, and how many jobs each
    l_topic      text[] := '{}';
    l_tenant     text[] := '{}';
    l_ckey       text[] := '{}';
    l_rkey       text[] := '{}';
    l_cap        integer[] := '{}';
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
    v_batch      jsonb := '[]';  -- every run's events, appended in one call at the end
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    -- 1. The lanes with pending jobs, one index probe each (a loose scan of jobs_claimable:
    -- each probe jumps past the whole previous lane, so 100,000 jobs of one tenant or one
    -- closed key cost one probe, not a walk). A lane is a tenant and its gate keys; walking
    -- lanes rather than one ordered list is what lets a job behind a closed gate, or behind
    -- another tenant's backlog, be claimed (docs/workflows.md#concurrency-and-rate-limits).
    FOREACH v_topic IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(claim_jobs.topics) AS u) LOOP
        FOR l IN
            WITH RECURSIVE lane AS (
                (SELECT j.tenant_id, j.concurrency_key, j.rate_key, j.concurrency_limit,
                        j.rate_limit, j.rate_per_ms
                   FROM warden.jobs j
                  WHERE j.status = 'pending' AND j.topic = v_topic
                  ORDER BY j.tenant_id, j.concurrency_key, j.rate_key, j.priority,
                           j.available_at
                  LIMIT 1)
                UNION ALL
                SELECT n.* FROM lane p CROSS JOIN LATERAL (
                    SELECT j.tenant_id, j.concurrency_key, j.rate_key, j.concurrency_limit,
                           j.rate_limit, j.rate_per_ms
                      FROM warden.jobs j
                     WHERE j.status = 'pending' AND j.topic = v_topic
                       AND (j.tenant_id, j.concurrency_key, j.rate_key)
                           > (p.tenant_id, p.concurrency_key, p.rate_key)
                     ORDER BY j.tenant_id, j.concurrency_key, j.rate_key, j.priority,
                              j.available_at
                     LIMIT 1) n
            )
            SELECT * FROM lane
             -- only what the login role is granted (warden.worker_grants)
             WHERE warden.granted(lane.tenant_id, v_topic)
        LOOP
            a_topic := a_topic || v_topic;
            a_tenant := a_tenant || l.tenant_id;
            a_ckey := a_ckey || l.concurrency_key;
            a_climit := a_climit || l.concurrency_limit;
            a_rkey := a_rkey || l.rate_key;
            a_rlimit := a_rlimit || l.rate_limit;
            a_rper := a_rper || l.rate_per_ms;
        END LOOP;
    END LOOP;
    -- 2. Rate gates: each count is exact because it is taken under a transaction-level
    -- advisory lock on the gate (tenant and key), held to commit: the next claimer of the
    -- key counts only after this claim's claims are committed (a new snapshot per
    -- statement, READ COMMITTED). These are waited for, all before any other lock and in
    -- one global order (by lock id), so claimers never wait on each other in a cycle and
    -- nobody holding a run lock ever waits for one.
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
        END IF;
    END LOOP;
    FOR c IN
        -- 5. Up to `cap` jobs of each open lane in (priority, available_at) order, one
        -- index walk each that LIMIT stops early. SKIP LOCKED: concurrent claimers take
        -- disjoint rows instead of queueing behind each other; rows the filters below drop
        -- are unlocked at commit, claimable again at once.
        WITH lanes AS (
            SELECT * FROM unnest(l_topic, l_tenant, l_ckey, l_rkey, l_cap)
                       AS x(topic, tenant_id, ckey, rkey, cap)
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
                      AND j.available_at <= v_now
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
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

-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_done warden.jobs[];
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- Lock order jobs -> runs -> steps. The jobs are locked by this UPDATE (each has one
    -- lease holder, so two completers never contend for a job); the runs are then locked
    -- in (tenant, run) order by append_events, as claim_jobs and the reaper do. The
    -- completed rows are kept in a variable, not a temporary table: a temp table per
    -- call would churn the system catalogs on the hottest path there is.
    WITH input AS (
        SELECT * FROM unnest(complete_jobs.job_ids, complete_jobs.lease_tokens,
                             complete_jobs.results) AS u(job_id, lease_token, result)
    ), done AS (
        -- job_id = ANY(...) lets jobs_by_job_id find the rows whatever the planner makes
        -- of the join (it chose a hash join over a scan of all of warden.jobs per batch)
        UPDATE warden.jobs t
           SET status = 'succeeded', result = i.result, finished_at = warden.now()
          FROM input i
         WHERE t.job_id = ANY (complete_jobs.job_ids) AND t.job_id = i.job_id
           AND warden.lease_held(t, i.lease_token)
        RETURNING t AS j
    )
    SELECT coalesce(array_agg(d.j ORDER BY (d.j).tenant_id, (d.j).run_id, (d.j).job_id), '{}')
      INTO v_done FROM done d;

    -- every run's events in one INSERT (warden.append_events_for_runs locks the runs in
    -- (tenant, run) order, as claim_jobs and the reaper do)
    PERFORM warden.append_events_for_runs(coalesce((
        SELECT jsonb_agg(jsonb_build_object('tenant_id', g.tenant_id, 'run_id', g.run_id,
                                            'events', g.events))
          FROM (SELECT c.tenant_id, c.run_id,
                       jsonb_agg(jsonb_build_object('kind', 'job.succeeded',
                                                    'step_id', c.step_id, 'job_id', c.job_id,
                                                    'attempt', c.attempt, 'actor', c.worker,
                                                    'data', '{}'::jsonb)
                                 ORDER BY c.job_id) AS events
                  FROM unnest(v_done) c
                 GROUP BY c.tenant_id, c.run_id) g), '[]'));

    UPDATE warden.steps s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now()
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running' AND c.item_index IS NULL;
    -- a for_each item's job ends its item; the scheduler then decides the step's outcome
    -- (engine/scheduling/fanout.py), which needs every item
    UPDATE warden.step_items s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now(),
           retry_at = NULL
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.item_index = c.item_index AND s.status = 'running';

    -- wake_run, set-based: each run's flag once, one NOTIFY for the batch
    UPDATE warden.runs u SET needs_scheduling = true
      FROM (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
     WHERE u.tenant_id = c.tenant_id AND u.run_id = c.run_id AND NOT u.needs_scheduling;
    IF cardinality(v_done) > 0 THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;

    -- the job row is looked up again (by index, one per job) only for the fenced ones
    RETURN QUERY
        SELECT i.job_id,
               CASE WHEN c.job_id IS NOT NULL THEN 'completed'
                    ELSE warden.fence_outcome(i.job_id) END
          FROM unnest(complete_jobs.job_ids) AS i(job_id)
          LEFT JOIN unnest(v_done) c ON c.job_id = i.job_id;
END $$;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_done warden.jobs[];
    r      record;
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- Lock order jobs -> runs -> steps. The jobs are locked by this UPDATE (each has one
    -- lease holder, so two completers never contend for a job); the runs are then locked
    -- in (tenant, run) order by append_events, as claim_jobs and the reaper do. The
    -- completed rows are kept in a variable, not a temporary table: a temp table per
    -- call would churn the system catalogs on the hottest path there is.
    WITH input AS (
        SELECT * FROM unnest(complete_jobs.job_ids, complete_jobs.lease_tokens,
                             complete_jobs.results) AS u(job_id, lease_token, result)
    ), done AS (
        -- job_id = ANY(...) lets jobs_by_job_id find the rows whatever the planner makes
        -- of the join (it chose a hash join over a scan of all of warden.jobs per batch)
        UPDATE warden.jobs t
           SET status = 'succeeded', result = i.result, finished_at = warden.now()
          FROM input i
         WHERE t.job_id = ANY (complete_jobs.job_ids) AND t.job_id = i.job_id
           AND warden.lease_held(t, i.lease_token)
        RETURNING t AS j
    )
    SELECT coalesce(array_agg(d.j ORDER BY (d.j).tenant_id, (d.j).run_id, (d.j).job_id), '{}')
      INTO v_done FROM done d;

    FOR r IN
        SELECT c.tenant_id, c.run_id,
               jsonb_agg(jsonb_build_object('kind', 'job.succeeded', 'step_id', c.step_id,
                                            'job_id', c.job_id, 'attempt', c.attempt,
                                            'actor', c.worker, 'data', '{}'::jsonb)
                         ORDER BY c.job_id) AS events
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
         ORDER BY c.tenant_id, c.run_id
    LOOP
        PERFORM warden.append_events(r.tenant_id, r.run_id, r.events);
    END LOOP;

    UPDATE warden.steps s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now()
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running' AND c.item_index IS NULL;
    -- a for_each item's job ends its item; the scheduler then decides the step's outcome
    -- (engine/scheduling/fanout.py), which needs every item
    UPDATE warden.step_items s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = warden.now(),
           retry_at = NULL
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.item_index = c.item_index AND s.status = 'running';

    -- wake_run, set-based: each run's flag once, one NOTIFY for the batch
    UPDATE warden.runs u SET needs_scheduling = true
      FROM (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
     WHERE u.tenant_id = c.tenant_id AND u.run_id = c.run_id AND NOT u.needs_scheduling;
    IF cardinality(v_done) > 0 THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;

    -- the job row is looked up again (by index, one per job) only for the fenced ones
    RETURN QUERY
        SELECT i.job_id,
               CASE WHEN c.job_id IS NOT NULL THEN 'completed'
                    ELSE warden.fence_outcome(i.job_id) END
          FROM unnest(complete_jobs.job_ids) AS i(job_id)
          LEFT JOIN unnest(v_done) c ON c.job_id = i.job_id;
END $$;

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
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    v_events     jsonb;
    -- every lane with pending jobs (a topic, a tenant, its gate keys and their limits)
    a_topic      text[] := '{}';
    a_tenant     text[] := '{}';
    a_ckey       text[] := '{}';
    a_climit     integer[] := '{}';
    a_rkey       text[] := '{}';
    a_rlimit     integer[] := '{}';
    a_rper       integer[] := '{}';
    -- the lanes this claim takes from, and how many jobs each
    l_topic      text[] := '{}';
    l_tenant     text[] := '{}';
    l_ckey       text[] := '{}';
    l_rkey       text[] := '{}';
    l_cap        integer[] := '{}';
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
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    -- 1. The lanes with pending jobs, one index probe each (a loose scan of jobs_claimable:
    -- each probe jumps past the whole previous lane, so 100,000 jobs of one tenant or one
    -- closed key cost one probe, not a walk). A lane is a tenant and its gate keys; walking
    -- lanes rather than one ordered list is what lets a job behind a closed gate, or behind
    -- another tenant's backlog, be claimed (docs/workflows.md#concurrency-and-rate-limits).
    FOREACH v_topic IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(claim_jobs.topics) AS u) LOOP
        FOR l IN
            WITH RECURSIVE lane AS (
                (SELECT j.tenant_id, j.concurrency_key, j.rate_key, j.concurrency_limit,
                        j.rate_limit, j.rate_per_ms
                   FROM warden.jobs j
                  WHERE j.status = 'pending' AND j.topic = v_topic
                  ORDER BY j.tenant_id, j.concurrency_key, j.rate_key, j.priority,
                           j.available_at
                  LIMIT 1)
                UNION ALL
                SELECT n.* FROM lane p CROSS JOIN LATERAL (
                    SELECT j.tenant_id, j.concurrency_key, j.rate_key, j.concurrency_limit,
                           j.rate_limit, j.rate_per_ms
                      FROM warden.jobs j
                     WHERE j.status = 'pending' AND j.topic = v_topic
                       AND (j.tenant_id, j.concurrency_key, j.rate_key)
                           > (p.tenant_id, p.concurrency_key, p.rate_key)
                     ORDER BY j.tenant_id, j.concurrency_key, j.rate_key, j.priority,
                              j.available_at
                     LIMIT 1) n
            )
            SELECT * FROM lane
             -- only what the login role is granted (warden.worker_grants)
             WHERE warden.granted(lane.tenant_id, v_topic)
        LOOP
            a_topic := a_topic || v_topic;
            a_tenant := a_tenant || l.tenant_id;
            a_ckey := a_ckey || l.concurrency_key;
            a_climit := a_climit || l.concurrency_limit;
            a_rkey := a_rkey || l.rate_key;
            a_rlimit := a_rlimit || l.rate_limit;
            a_rper := a_rper || l.rate_per_ms;
        END LOOP;
    END LOOP;
    -- 2. Rate gates: each count is exact because it is taken under a transaction-level
    -- advisory lock on the gate (tenant and key), held to commit: the next claimer of the
    -- key counts only after this claim's claims are committed (a new snapshot per
    -- statement, READ COMMITTED). These are waited for, all before any other lock and in
    -- one global order (by lock id), so claimers never wait on each other in a cycle and
    -- nobody holding a run lock ever waits for one.
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
        END IF;
    END LOOP;
    FOR c IN
        -- 5. Up to `cap` jobs of each open lane in (priority, available_at) order, one
        -- index walk each that LIMIT stops early. SKIP LOCKED: concurrent claimers take
        -- disjoint rows instead of queueing behind each other; rows the filters below drop
        -- are unlocked at commit, claimable again at once.
        WITH lanes AS (
            SELECT * FROM unnest(l_topic, l_tenant, l_ckey, l_rkey, l_cap)
                       AS x(topic, tenant_id, ckey, rkey, cap)
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
                      AND j.available_at <= v_now
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
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
        -- Each run is locked once per claim, and its events are appended in one call
        -- when the claim moves to the next run (not once per claimed job: a fan-out's
        -- workers and its scheduler would queue on the run row for each).
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                PERFORM warden.append_events(v_tenant, v_run, v_events);
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
        PERFORM warden.append_events(v_tenant, v_run, v_events);
    END IF;
END $$;

DROP FUNCTION warden.append_events_for_runs(jsonb);

-- The bytes a timeline event's hash signs: the previous hash and the event's fields,
-- separated by U+001F. Times enter as epoch microseconds so the text does not depend on
-- the session's TimeZone or DateStyle; jsonb's text form is canonical. Holds no key: any
-- role may call it (engine/runs/evidence.py computes the same bytes offline).
CREATE OR REPLACE FUNCTION warden.event_message(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')
$$;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
