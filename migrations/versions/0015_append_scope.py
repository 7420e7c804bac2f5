"""The append functions check the caller's tenant scope: warden.append_events and
warden.append_events_for_runs, the engine's, refuse a run of a tenant outside the
session's warden.tenant scope (warden.in_scope) before appending anything, and call their
former bodies, now warden.append_events_unscoped and warden.append_events_for_runs_unscoped,
which no login role may execute. The job functions (claim_jobs, complete_jobs,
heartbeat_job, fail_job, release_job, reap_expired_jobs, end_attempt), which run for
worker sessions that carry no scope and check the worker's grants and leases themselves,
call the unscoped ones (append_event_unscoped for one event).

Revision ID: 0015_append_scope
Revises: 0014_event_starts
Create Date: 2026-12-06

Frozen. Closes the gap "the append functions do not check the caller's tenant scope"
(docs/design.md).
"""

from alembic import op

revision = "0015_append_scope"
down_revision = "0014_event_starts"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;

-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}. Asks nobody's scope: the engine reaches it through warden.append_events, which
-- checks the session's tenant scope; the job functions through append_event_unscoped.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
--
-- Each hash is HMAC-SHA-256 under the active chain key (sql/schema/55_chain_keys.sql),
-- inlined as two sha256 calls. SECURITY DEFINER to read the key; it signs only events it
-- appends itself, at the run's next seq after the head, so a caller gets no MAC of a row
-- it could put anywhere else (an existing (run, seq) is refused by the primary key).
-- Each event takes the run's created_at as run_created_at, the timeline's partition key:
-- this function is the only writer, so a run's events all sit in the run's partition.
CREATE OR REPLACE FUNCTION warden.append_events_unscoped(p_tenant text, p_run uuid,
                                                         p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
    v_key  integer;
    v_ipad bytea;
    v_opad bytea;
    v_created timestamptz;
BEGIN
    SELECT timeline_seq, timeline_hash, created_at INTO v_seq, v_prev, v_created
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id',
                      e->>'job_id', (e->>'attempt')::integer, e->>'actor',
                      coalesce(e->'data', '{}')))), 'hex');
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash, key_id,
                                     run_created_at)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash, v_key, v_created);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- No role but the owner may call it: it appends to any tenant's run. The job functions
-- (SECURITY DEFINER, which check the worker's grants and lease themselves) call it as the
-- owner; the engine calls warden.append_events, which checks the session's tenant scope
-- first.
REVOKE EXECUTE ON FUNCTION warden.append_events_unscoped(text, uuid, jsonb) FROM PUBLIC;

-- Appends the events of several runs, each run's in order, with one INSERT for all of
-- them and one UPDATE of all their heads (append_events, set-based: a scheduler pass, a
-- batch start or a batch of completions writes thousands of events at once, and one
-- INSERT per event was most of what the timeline cost). p_batch: a JSON array of
-- {tenant_id, run_id, events}, at most one entry per run, events as append_events takes
-- them ({kind, step_id, job_id, attempt, actor, data}). Asks nobody's scope: the engine
-- reaches it through warden.append_events_for_runs, which checks the session's tenant
-- scope; claim_jobs and complete_jobs call it directly.
--
-- Same chain and same locks as append_events: the runs are locked FOR NO KEY UPDATE in
-- (tenant, run) order (the lock is taken above the sort, so in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.append_events_for_runs_unscoped(p_batch jsonb)
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
-- No role but the owner may call it: it appends to any tenant's runs. claim_jobs and
-- complete_jobs (SECURITY DEFINER, which check the worker's grants and leases themselves)
-- call it as the owner; the engine calls warden.append_events_for_runs, which checks the
-- session's tenant scope first.
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs_unscoped(jsonb) FROM PUBLIC;

-- Appends one event to a run's timeline and returns its seq, asking nobody's tenant
-- scope: append_events_unscoped with one event. For the job functions only (heartbeat,
-- fail, release, the reaper, end_attempt), which run as the owner for worker sessions
-- that carry no scope and check the worker's grant and lease themselves; the engine
-- calls warden.append_event. Callers must already hold any job/approval locks they need
-- (lock order: jobs -> approvals -> runs -> steps).
CREATE OR REPLACE FUNCTION warden.append_event_unscoped(
    p_tenant text, p_run uuid, p_kind warden.timeline_kind, p_step text, p_job text,
    p_attempt integer, p_actor text, p_data jsonb
) RETURNS bigint LANGUAGE sql AS $$
    SELECT warden.append_events_unscoped(p_tenant, p_run, jsonb_build_array(
        jsonb_build_object('kind', p_kind, 'step_id', p_step, 'job_id', p_job,
                           'attempt', p_attempt, 'actor', p_actor,
                           'data', coalesce(p_data, '{}'))))
$$;
-- No role but the owner may call it (what it calls is the owner's alone anyway).
REVOKE EXECUTE ON FUNCTION warden.append_event_unscoped(text, uuid, warden.timeline_kind,
    text, text, integer, text, jsonb) FROM PUBLIC;

-- Appends a run's events for an engine session and returns the seq of the last one
-- (warden.append_events_unscoped does the work: lock, seq, chain; p_events as it takes
-- them).
--
-- The tenant fence of row-level security (sql/grants/30_row_security.sql), kept by a
-- function that bypasses it: the session may append only to a run of a tenant in its
-- scope (warden.in_scope: the tenant its transaction carries in warden.tenant, or '*'),
-- so an API request of one tenant cannot add a correctly chained event to another
-- tenant's run. The run is found by (p_tenant, p_run), so checking the tenant given is
-- checking the run's, before any read or lock (and a refusal tells nothing of the run).
-- A superuser is not asked, as row-level security does not fence one either (tests, the
-- embedded demo); coalesce: an unset warden.tenant makes in_scope NULL, which refuses.
-- The job functions do not come through here (a worker session carries no scope): they
-- check the worker's grant and lease and call append_event_unscoped as the owner.
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT coalesce(warden.in_scope(p_tenant), false)
       AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                          WHERE r.rolname = session_user), false) THEN
        RAISE EXCEPTION 'not allowed to append to a run of tenant %: it is outside this '
                        'session''s tenant scope (warden.tenant)', p_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN warden.append_events_unscoped(p_tenant, p_run, p_events);
END $$;
-- Only the roles that write runs may call it (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) FROM PUBLIC;

-- Appends the events of several runs for an engine session (a scheduler pass, a batch
-- start; warden.append_events_for_runs_unscoped does the work, p_batch as it takes it).
--
-- The tenant fence, as warden.append_events keeps it for one run: every run of the batch
-- must belong to a tenant in the session's scope (warden.in_scope), or the whole batch is
-- refused and nothing is appended. One query over the batch's tenants, before any lock
-- is taken; a run is found by its (tenant_id, run_id) entry, so the tenant given is the
-- run's. A superuser is not asked, as row-level security does not fence one either.
-- claim_jobs and complete_jobs do not come through here (a worker session carries no
-- scope): they check the worker's grants and leases and call the unscoped function.
CREATE OR REPLACE FUNCTION warden.append_events_for_runs(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
BEGIN
    -- coalesce: an unset warden.tenant makes in_scope NULL, which refuses
    SELECT x.tenant_id INTO v_tenant
      FROM jsonb_to_recordset(p_batch) AS x(tenant_id text)
     WHERE NOT coalesce(warden.in_scope(x.tenant_id), false)
     LIMIT 1;
    IF FOUND AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r
                                WHERE r.rolname = session_user), false) THEN
        RAISE EXCEPTION 'not allowed to append to a run of tenant %: it is outside this '
                        'session''s tenant scope (warden.tenant)', v_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM warden.append_events_for_runs_unscoped(p_batch);
END $$;
-- Only the roles that write runs may call it (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs(jsonb) FROM PUBLIC;

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
        -- appended in one call at its end (append_events_for_runs_unscoped: one INSERT;
        -- unscoped, as a worker session carries no tenant scope: the grants were checked
        -- above), not once per claimed job: a fan-out's workers and its scheduler would
        -- queue on the run row for each.
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
        PERFORM warden.append_events_for_runs_unscoped(v_batch);
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

    -- every run's events in one INSERT (append_events_for_runs_unscoped locks the runs in
    -- (tenant, run) order, as claim_jobs and the reaper do; unscoped: a worker session
    -- carries no tenant scope, and the leases were checked above)
    PERFORM warden.append_events_for_runs_unscoped(coalesce((
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

-- After an attempt ended without success: schedule the next attempt if the step has one
-- left and the error is retryable, else end the step with p_step_status. Internal to the
-- job protocol (fail_job, release_job, reap_expired_jobs). The attempt of a for_each
-- item (j.item_index set) schedules or ends that item, with the retry contract of its
-- step: the scheduler then decides what the step's outcome is (engine/scheduling/fanout.py).
CREATE OR REPLACE FUNCTION warden.end_attempt(
    j warden.jobs, p_step_status warden.step_status, p_error jsonb, p_retryable boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s       warden.steps;
    i       warden.step_items;
    v_delay double precision;
BEGIN
    -- lock order: the run before its steps (callers normally hold it already)
    PERFORM 1 FROM warden.runs WHERE tenant_id = j.tenant_id AND run_id = j.run_id
        FOR NO KEY UPDATE;
    IF j.item_index IS NOT NULL THEN
        SELECT * INTO s FROM warden.steps
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id;
        SELECT * INTO i FROM warden.step_items
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index
           FOR NO KEY UPDATE;
        IF i.status <> 'running' THEN
            RETURN;  -- the step or the run ended meanwhile: nothing to schedule
        END IF;
        IF p_retryable AND j.attempt < i.max_attempts THEN
            v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
            v_delay := v_delay * (1 + s.jitter * random());
            UPDATE warden.step_items
               SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
                   error = p_error
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
            PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id,
                'job.retry_scheduled', j.step_id, j.job_id, j.attempt, NULL,
                jsonb_build_object(
                    'item_index', j.item_index, 'next_attempt', j.attempt + 1,
                    'delay_ms', round(v_delay),
                    'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
        ELSE
            UPDATE warden.step_items SET status = p_step_status, error = p_error,
                                         finished_at = warden.now(), retry_at = NULL
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
        END IF;
        PERFORM warden.wake_run(j.tenant_id, j.run_id);
        RETURN;
    END IF;
    SELECT * INTO s FROM warden.steps
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       FOR NO KEY UPDATE;
    IF s.status <> 'running' THEN
        RETURN;  -- the run was cancelled or the step already ended: nothing to schedule
    END IF;
    IF p_retryable AND j.attempt < s.max_attempts THEN
        -- backoff_ms * multiplier^(n-1), capped; jitter only ever adds, so no retry comes
        -- earlier than the configured backoff
        v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
        v_delay := v_delay * (1 + s.jitter * random());
        UPDATE warden.steps
           SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
               error = p_error
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.retry_scheduled',
            j.step_id, j.job_id, j.attempt, NULL, jsonb_build_object(
                'next_attempt', j.attempt + 1, 'delay_ms', round(v_delay),
                'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
    ELSE
        UPDATE warden.steps SET status = p_step_status, error = p_error,
                                finished_at = warden.now(), retry_at = NULL
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
    END IF;
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;

-- Fails one job under its lease token (fenced: warden.lease_held) and schedules the
-- step's next attempt when one is left and the error is retryable (end_attempt).
CREATE OR REPLACE FUNCTION warden.fail_job(job_id text, lease_token uuid, error jsonb,
                                           retryable boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'failed', error = fail_job.error, finished_at = warden.now()
     WHERE t.job_id = fail_job.job_id AND warden.lease_held(t, fail_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(fail_job.job_id);
    END IF;
    PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.failed', j.step_id,
        j.job_id, j.attempt, j.worker, jsonb_build_object('error', fail_job.error,
                                                'retryable', fail_job.retryable));
    PERFORM warden.end_attempt(j, 'failed', fail_job.error, fail_job.retryable);
END $$;

-- Extends a held lease (never past the attempt's deadline, timeout_ms after its start)
-- and stores the checkpoint if one is given; returns the new expiry. Fenced
-- (warden.lease_held): raises WD001 / WD002 / WD404 once the lease is gone, which is how a
-- worker learns that its run was cancelled.
CREATE OR REPLACE FUNCTION warden.heartbeat_job(
    job_id text, lease_token uuid, extend interval, checkpoint jsonb DEFAULT NULL
) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET lease_expires_at = least(warden.now() + extend, coalesce(t.deadline_at, 'infinity')),
           checkpoint = coalesce(heartbeat_job.checkpoint, t.checkpoint)
     WHERE t.job_id = heartbeat_job.job_id
       AND warden.lease_held(t, heartbeat_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(heartbeat_job.job_id);
    END IF;
    IF heartbeat_job.checkpoint IS NOT NULL THEN
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.checkpointed',
            j.step_id, j.job_id, j.attempt, j.worker, jsonb_build_object(
                'bytes', octet_length(heartbeat_job.checkpoint::text),
                'sha256', encode(sha256(convert_to(heartbeat_job.checkpoint::text, 'UTF8')),
                                 'hex')));
    END IF;
    RETURN j.lease_expires_at;
END $$;

-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_n   integer := 0;
    v_now timestamptz := warden.now();
BEGIN
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = v_now,
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.timed_out',
            j.step_id, j.job_id, j.attempt, 'reaper', jsonb_build_object('error', j.error));
        PERFORM warden.end_attempt(j, 'timed_out', j.error, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;

-- A worker that stops gives its job back: the attempt ends (fenced by the lease token
-- like every worker write) and the next one is scheduled at once. A release is the
-- worker's decision, not the job's failure: the step's max_attempts grows by one so the
-- released attempt is not counted against its retries.
CREATE OR REPLACE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_err jsonb;
BEGIN
    v_err := jsonb_build_object('type', 'Released', 'message', release_job.reason);
    UPDATE warden.jobs t
       SET status = 'failed', error = v_err, finished_at = warden.now()
     WHERE t.job_id = release_job.job_id AND warden.lease_held(t, release_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(release_job.job_id);
    END IF;
    PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.failed', j.step_id,
        j.job_id, j.attempt, j.worker, jsonb_build_object('error', v_err, 'released', true));
    IF j.item_index IS NOT NULL THEN  -- a for_each item: the item's count, not the step's
        UPDATE warden.step_items SET max_attempts = max_attempts + 1
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND status = 'running';
        PERFORM warden.end_attempt(j, 'failed', v_err, true);
        UPDATE warden.step_items SET retry_at = warden.now()
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND retry_at IS NOT NULL;
        RETURN;
    END IF;
    UPDATE warden.steps SET max_attempts = max_attempts + 1
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.end_attempt(j, 'failed', v_err, true);
    UPDATE warden.steps SET retry_at = warden.now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND retry_at IS NOT NULL;
END $$;

RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;

-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
--
-- Each hash is HMAC-SHA-256 under the active chain key (sql/schema/55_chain_keys.sql),
-- inlined as two sha256 calls. SECURITY DEFINER to read the key; it signs only events it
-- appends itself, at the run's next seq after the head, so a caller gets no MAC of a row
-- it could put anywhere else (an existing (run, seq) is refused by the primary key).
-- Each event takes the run's created_at as run_created_at, the timeline's partition key:
-- this function is the only writer, so a run's events all sit in the run's partition.
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
    v_key  integer;
    v_ipad bytea;
    v_opad bytea;
    v_created timestamptz;
BEGIN
    SELECT timeline_seq, timeline_hash, created_at INTO v_seq, v_prev, v_created
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id',
                      e->>'job_id', (e->>'attempt')::integer, e->>'actor',
                      coalesce(e->'data', '{}')))), 'hex');
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash, key_id,
                                     run_created_at)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash, v_key, v_created);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- As SECURITY DEFINER it would let any role append to any run: only the roles that write
-- runs may (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) FROM PUBLIC;

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

-- After an attempt ended without success: schedule the next attempt if the step has one
-- left and the error is retryable, else end the step with p_step_status. Internal to the
-- job protocol (fail_job, release_job, reap_expired_jobs). The attempt of a for_each
-- item (j.item_index set) schedules or ends that item, with the retry contract of its
-- step: the scheduler then decides what the step's outcome is (engine/scheduling/fanout.py).
CREATE OR REPLACE FUNCTION warden.end_attempt(
    j warden.jobs, p_step_status warden.step_status, p_error jsonb, p_retryable boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s       warden.steps;
    i       warden.step_items;
    v_delay double precision;
BEGIN
    -- lock order: the run before its steps (callers normally hold it already)
    PERFORM 1 FROM warden.runs WHERE tenant_id = j.tenant_id AND run_id = j.run_id
        FOR NO KEY UPDATE;
    IF j.item_index IS NOT NULL THEN
        SELECT * INTO s FROM warden.steps
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id;
        SELECT * INTO i FROM warden.step_items
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index
           FOR NO KEY UPDATE;
        IF i.status <> 'running' THEN
            RETURN;  -- the step or the run ended meanwhile: nothing to schedule
        END IF;
        IF p_retryable AND j.attempt < i.max_attempts THEN
            v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
            v_delay := v_delay * (1 + s.jitter * random());
            UPDATE warden.step_items
               SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
                   error = p_error
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
            PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.retry_scheduled',
                j.step_id, j.job_id, j.attempt, NULL, jsonb_build_object(
                    'item_index', j.item_index, 'next_attempt', j.attempt + 1,
                    'delay_ms', round(v_delay),
                    'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
        ELSE
            UPDATE warden.step_items SET status = p_step_status, error = p_error,
                                         finished_at = warden.now(), retry_at = NULL
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
        END IF;
        PERFORM warden.wake_run(j.tenant_id, j.run_id);
        RETURN;
    END IF;
    SELECT * INTO s FROM warden.steps
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       FOR NO KEY UPDATE;
    IF s.status <> 'running' THEN
        RETURN;  -- the run was cancelled or the step already ended: nothing to schedule
    END IF;
    IF p_retryable AND j.attempt < s.max_attempts THEN
        -- backoff_ms * multiplier^(n-1), capped; jitter only ever adds, so no retry comes
        -- earlier than the configured backoff
        v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
        v_delay := v_delay * (1 + s.jitter * random());
        UPDATE warden.steps
           SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
               error = p_error
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.retry_scheduled', j.step_id,
            j.job_id, j.attempt, NULL, jsonb_build_object(
                'next_attempt', j.attempt + 1, 'delay_ms', round(v_delay),
                'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
    ELSE
        UPDATE warden.steps SET status = p_step_status, error = p_error,
                                finished_at = warden.now(), retry_at = NULL
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
    END IF;
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;

-- Fails one job under its lease token (fenced: warden.lease_held) and schedules the
-- step's next attempt when one is left and the error is retryable (end_attempt).
CREATE OR REPLACE FUNCTION warden.fail_job(job_id text, lease_token uuid, error jsonb,
                                           retryable boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET status = 'failed', error = fail_job.error, finished_at = warden.now()
     WHERE t.job_id = fail_job.job_id AND warden.lease_held(t, fail_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(fail_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', fail_job.error,
                                                'retryable', fail_job.retryable));
    PERFORM warden.end_attempt(j, 'failed', fail_job.error, fail_job.retryable);
END $$;

-- Extends a held lease (never past the attempt's deadline, timeout_ms after its start)
-- and stores the checkpoint if one is given; returns the new expiry. Fenced
-- (warden.lease_held): raises WD001 / WD002 / WD404 once the lease is gone, which is how a
-- worker learns that its run was cancelled.
CREATE OR REPLACE FUNCTION warden.heartbeat_job(
    job_id text, lease_token uuid, extend interval, checkpoint jsonb DEFAULT NULL
) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j warden.jobs;
BEGIN
    UPDATE warden.jobs t
       SET lease_expires_at = least(warden.now() + extend, coalesce(t.deadline_at, 'infinity')),
           checkpoint = coalesce(heartbeat_job.checkpoint, t.checkpoint)
     WHERE t.job_id = heartbeat_job.job_id
       AND warden.lease_held(t, heartbeat_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(heartbeat_job.job_id);
    END IF;
    IF heartbeat_job.checkpoint IS NOT NULL THEN
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.checkpointed', j.step_id,
            j.job_id, j.attempt, j.worker, jsonb_build_object(
                'bytes', octet_length(heartbeat_job.checkpoint::text),
                'sha256', encode(sha256(convert_to(heartbeat_job.checkpoint::text, 'UTF8')),
                                 'hex')));
    END IF;
    RETURN j.lease_expires_at;
END $$;

-- Ends attempts whose lease expired as timed_out and schedules their retries; returns
-- the number reaped. The complement of warden.lease_held: a job it reaps is one no
-- worker write can land on any more. SKIP LOCKED lets any number of reapers run side by
-- side, and skips a job whose worker is writing to it right now.
CREATE OR REPLACE FUNCTION warden.reap_expired_jobs(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_n   integer := 0;
    v_now timestamptz := warden.now();
BEGIN
    FOR j IN
        WITH expired AS (
            -- jobs_running_lease serves this scan in expiry order
            SELECT t.tenant_id, t.job_id FROM warden.jobs t
             WHERE t.status = 'running' AND t.lease_expires_at <= v_now
             ORDER BY t.lease_expires_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED
        ), reaped AS (
            UPDATE warden.jobs t
               SET status = 'timed_out', finished_at = v_now,
                   error = jsonb_build_object('type', 'LeaseExpired',
                       'message', 'lease expired at ' || t.lease_expires_at)
              FROM expired e
             WHERE t.tenant_id = e.tenant_id AND t.job_id = e.job_id
            RETURNING t.*
        )
        SELECT * FROM reaped r ORDER BY r.tenant_id, r.run_id, r.job_id  -- run lock order
    LOOP
        PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.timed_out', j.step_id, j.job_id,
                                    j.attempt, 'reaper', jsonb_build_object('error', j.error));
        PERFORM warden.end_attempt(j, 'timed_out', j.error, true);
        v_n := v_n + 1;
    END LOOP;
    RETURN v_n;
END $$;

-- A worker that stops gives its job back: the attempt ends (fenced by the lease token
-- like every worker write) and the next one is scheduled at once. A release is the
-- worker's decision, not the job's failure: the step's max_attempts grows by one so the
-- released attempt is not counted against its retries.
CREATE OR REPLACE FUNCTION warden.release_job(job_id text, lease_token uuid, reason text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     warden.jobs;
    v_err jsonb;
BEGIN
    v_err := jsonb_build_object('type', 'Released', 'message', release_job.reason);
    UPDATE warden.jobs t
       SET status = 'failed', error = v_err, finished_at = warden.now()
     WHERE t.job_id = release_job.job_id AND warden.lease_held(t, release_job.lease_token)
    RETURNING t.* INTO j;
    IF NOT FOUND THEN
        PERFORM warden.raise_fenced(release_job.job_id);
    END IF;
    PERFORM warden.append_event(j.tenant_id, j.run_id, 'job.failed', j.step_id, j.job_id,
        j.attempt, j.worker, jsonb_build_object('error', v_err, 'released', true));
    IF j.item_index IS NOT NULL THEN  -- a for_each item: the item's count, not the step's
        UPDATE warden.step_items SET max_attempts = max_attempts + 1
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND status = 'running';
        PERFORM warden.end_attempt(j, 'failed', v_err, true);
        UPDATE warden.step_items SET retry_at = warden.now()
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index AND retry_at IS NOT NULL;
        RETURN;
    END IF;
    UPDATE warden.steps SET max_attempts = max_attempts + 1
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND status = 'running';
    PERFORM warden.end_attempt(j, 'failed', v_err, true);
    UPDATE warden.steps SET retry_at = warden.now()
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       AND retry_at IS NOT NULL;
END $$;

DROP FUNCTION warden.append_event_unscoped(text, uuid, warden.timeline_kind, text, text,
                                           integer, text, jsonb);
DROP FUNCTION warden.append_events_for_runs_unscoped(jsonb);
DROP FUNCTION warden.append_events_unscoped(text, uuid, jsonb);
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
