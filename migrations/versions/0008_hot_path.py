"""Hot path: timeline events of many runs in one INSERT; an event's message inlined.

Revision ID: 0008_hot_path
Revises: 0006_keyed_chain
Create Date: 2026-12-06

Frozen. Adds warden.append_events_for_runs (append_events for several runs at once: the
same locks and chain, one INSERT of every event and one UPDATE of every head), executable
by warden_engine; warden.complete_jobs and warden.claim_jobs append their batch's events
through it;
warden.event_message is declared STABLE (what its body is) so PostgreSQL inlines it
(docs/design.md, "The timeline").
"""

from alembic import op

revision = "0008_hot_path"
down_revision = "0006_keyed_chain"
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
        SELECT x.tenant_id, x.run_id, x.events, u.timeline_seq, u.timeline_hash
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
                                 actor, data, prev_hash, hash, key_id)
    SELECT t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id, t.job_id, t.attempt,
           t.actor, t.data, t.prev_hash, t.hash, v_key
      FROM unnest(a_tenant, a_run, a_seq, a_at, a_kind, a_step, a_job, a_attempt, a_actor,
                  a_data, a_prev, a_hash)
           AS t(tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data,
                prev_hash, hash);
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
       AND s.status = 'running';

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
       AND s.status = 'running';

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
