"""One run's events appended with one INSERT, and the start in one call and a claim of
one run's jobs appending through that single-run path instead of the batch's:
warden.append_events_unscoped chains the hashes in memory and inserts the events
together (it inserted them one statement each, and read the clock's shift per event);
warden.start_planned_run calls warden.append_events for its one run, and
warden.claim_jobs calls warden.append_events_unscoped when every job it claimed is one
run's, not the batch functions with a batch of one (its JSON, its loop over runs and its
extra layers cost ~0.1 ms of a 1.3 ms start; bench/README.md, session 14).

Revision ID: 0033_one_run_append
Revises: 0032_helpers_keep_plans
Create Date: 2026-12-07

Frozen. The functions are verbatim copies of sql/functions/append_events_unscoped.sql,
start_planned_run.sql and claim_jobs.sql as of this change; the downgrade restores their
previous bodies. Same names, arguments, results and privileges; the same rows, seqs and
hashes.
"""

from alembic import op

revision = "0033_one_run_append"
down_revision = "0032_helpers_keep_plans"
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
--
-- The hashes are chained in the loop, in memory, and the events inserted with one
-- INSERT, as warden.chain_events_for_runs does for a batch of runs; the clock's shift is
-- read once per call (sql/functions/clock_timestamp.sql). A start in one call appends its
-- run's events here: one run needs neither the batch's JSON nor its loop over runs
-- (0.1 ms of a 1.3 ms start, bench/README.md, session 14).
CREATE OR REPLACE FUNCTION warden.append_events_unscoped(p_tenant text, p_run uuid,
                                                         p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: every statement is a keyed lookup or a write of one
-- run's events, whatever the arguments
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    e         jsonb;
    n         integer := 0;
    v_seq     bigint;
    v_prev    text;
    v_at      timestamptz;
    v_kind    warden.timeline_kind;
    v_key     integer;
    v_ipad    bytea;
    v_opad    bytea;
    v_created timestamptz;
    v_shift   interval;
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
    v_shift := coalesce((SELECT c.shift FROM warden.clock c), interval '0');
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        n := n + 1;
        v_at := pg_catalog.clock_timestamp() + v_shift;
        v_kind := (e->>'kind')::warden.timeline_kind;
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
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, a_step[n], a_job[n],
                      a_attempt[n], a_actor[n], a_data[n]))), 'hex');
        a_hash[n] := v_prev;
    END LOOP;
    IF n = 0 THEN
        RETURN v_seq;
    END IF;
    INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt,
                                 actor, data, prev_hash, hash, key_id, run_created_at)
    SELECT p_tenant, p_run, t.seq, t.at, t.kind, t.step_id, t.job_id, t.attempt, t.actor,
           t.data, t.prev_hash, t.hash, v_key, v_created
      FROM unnest(a_seq, a_at, a_kind, a_step, a_job, a_attempt, a_actor, a_data, a_prev,
                  a_hash)
           AS t(seq, at, kind, step_id, job_id, attempt, actor, data, prev_hash, hash);
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- No role but the owner may call it: it appends to any tenant's run. The job functions
-- (SECURITY DEFINER, which check the worker's grants and lease themselves) call it as the
-- owner; the engine calls warden.append_events, which checks the session's tenant scope
-- first.
REVOKE EXECUTE ON FUNCTION warden.append_events_unscoped(text, uuid, jsonb) FROM PUBLIC;
-- Starts one run in one call where a start plan covers it (sql/schema/63_start_plans.sql,
-- docs/design.md#starts-in-one-call): the run, its steps, its submit decisions, its first
-- steps dispatched (attempt, job, dispatch decision), its events and the workers' wake-up,
-- in the caller's transaction — the rows and events the engine's Python path writes for
-- such a start (engine/runs/lifecycle.py start_many, then its scheduler pass), without a
-- round trip between them. That path took 16 round trips; the run's first job waited on
-- all of them.
--
-- Returns the new run as it stands. Where the idempotency key is taken already (by a
-- committed run, or by one whose transaction this one waited for), that run instead, and
-- nothing is written: a run id other than p_run_id, which the caller replays or refuses
-- by its request digest. No row when nothing covers the start: no such workflow or
-- version (in the session's scope), no active snapshot, no plan for the version under it;
-- nothing is written then either, and the caller starts the run through its Python path,
-- which raises or starts it as it always does.
--
-- SECURITY INVOKER: it writes with the caller's own privileges and under its row-level
-- security, so an engine session can start nothing here it could not start statement by
-- statement (the timeline through warden.append_events, which checks the scope).
-- The input, key and digest are the caller's, checked as the Python path checks them.
CREATE OR REPLACE FUNCTION warden.start_planned_run(
    p_tenant_id text, p_workflow_id text, p_version text, p_run_id uuid, p_input jsonb,
    p_idempotency_key text, p_request_digest text, p_priority smallint, p_created_by text,
    p_started_by_event jsonb)
RETURNS SETOF warden.runs
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: every statement is a keyed lookup or a write of one
-- run's rows, whatever the arguments
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_version  text := p_version;
    v_snapshot text;
    v_plan     warden.start_plans;
    v_run      warden.runs;
    v_events   jsonb;
    -- the transaction's time on the database clock, read once: warden.now() is a SQL
    -- function the planner cannot inline, and each call cost tens of microseconds
    v_now      timestamptz := warden.now();
BEGIN
    IF v_version IS NULL THEN  -- the newest, as workflow_latest orders them
        SELECT w.version INTO v_version FROM warden.workflows w
         WHERE w.tenant_id = p_tenant_id AND w.workflow_id = p_workflow_id
         ORDER BY w.version_major DESC, w.version_minor DESC, w.version_patch DESC,
                  w.version_pre IS NULL DESC, w.version_pre DESC
         LIMIT 1;
    END IF;
    SELECT a.snapshot_hash INTO v_snapshot FROM warden.policy_active a
     WHERE a.tenant_id = p_tenant_id;
    SELECT * INTO v_plan FROM warden.start_plans p
     WHERE p.tenant_id = p_tenant_id AND p.workflow_id = p_workflow_id
       AND p.workflow_version = v_version AND p.snapshot_hash = v_snapshot;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- Running from the start, as the start's scheduler pass leaves it (runs_end_pass):
    -- one row version instead of an insert and an update
    INSERT INTO warden.runs
        (tenant_id, run_id, workflow_id, workflow_version, status, input, idempotency_key,
         request_digest, created_by, deadline_at, priority, pins, created_at, started_at,
         needs_scheduling)
    VALUES (p_tenant_id, p_run_id, p_workflow_id, v_version, 'running', p_input,
            p_idempotency_key, p_request_digest, p_created_by,
            v_now + make_interval(secs => v_plan.timeout_ms / 1000.0),
            p_priority, '{}', v_now, v_now, false)
    ON CONFLICT ON CONSTRAINT runs_idempotency DO NOTHING
    RETURNING * INTO v_run;
    IF NOT FOUND THEN  -- the key is taken: that run, for the caller to replay or refuse
        RETURN QUERY SELECT * FROM warden.runs u
                      WHERE u.tenant_id = p_tenant_id AND u.workflow_id = p_workflow_id
                        AND u.idempotency_key = p_idempotency_key;
        RETURN;
    END IF;

    -- the roots running their first attempt, the other steps pending
    INSERT INTO warden.steps
        (tenant_id, run_id, step_id, type, status, depends_on, topic, attempts, max_attempts,
         backoff_ms, max_backoff_ms, multiplier, jitter, timeout_ms, priority, started_at)
    SELECT p_tenant_id, p_run_id, s.step_id, s.type,
           CASE WHEN r.step_id IS NULL THEN 'pending' ELSE 'running' END::warden.step_status,
           s.depends_on, s.topic, CASE WHEN r.step_id IS NULL THEN 0 ELSE 1 END,
           s.max_attempts, s.backoff_ms, s.max_backoff_ms, s.multiplier, s.jitter,
           s.timeout_ms, s.priority, CASE WHEN r.step_id IS NOT NULL THEN v_now END
      FROM jsonb_to_recordset(v_plan.steps) AS s(
           step_id text, type warden.step_type, depends_on text[], topic text,
           max_attempts int, backoff_ms int, max_backoff_ms int, multiplier float8,
           jitter float8, timeout_ms int, priority smallint)
      LEFT JOIN jsonb_to_recordset(v_plan.roots) AS r(step_id text) ON r.step_id = s.step_id
     ORDER BY s.step_id;

    WITH submits AS (
        SELECT e.d->>'step_id' AS step_id, e.d->>'rule' AS rule, e.d->>'reason' AS reason, e.n
          FROM jsonb_array_elements(v_plan.submits) WITH ORDINALITY AS e(d, n)
    ), roots AS (
        SELECT e.d->>'step_id' AS step_id, e.d->>'topic' AS topic,
               (e.d->>'priority')::smallint AS priority, (e.d->>'timeout_ms')::integer
               AS timeout_ms, e.d->'input' AS input, e.d->>'rule' AS rule,
               e.d->>'reason' AS reason, e.n,
               p_run_id::text || ':' || (e.d->>'step_id') || '@1' AS job_id
          FROM jsonb_array_elements(v_plan.roots) WITH ORDINALITY AS e(d, n)
    ), decided AS (
        -- the submit decisions first, then the dispatches, as the Python path's two batches
        INSERT INTO warden.policy_decisions
            (tenant_id, stage, snapshot_hash, rule, decision, reason, constraints, run_id,
             step_id, job_id, run_created_at)
        SELECT p_tenant_id, x.stage::warden.policy_stage, v_snapshot, x.rule, 'allow',
               x.reason, '{}', p_run_id, x.step_id, x.job_id, v_run.created_at
          FROM (SELECT 0 AS part, s.n, 'submit' AS stage, s.step_id, NULL::text AS job_id,
                       s.rule, s.reason FROM submits s
                UNION ALL
                SELECT 1, r.n, 'dispatch', r.step_id, r.job_id, r.rule, r.reason
                  FROM roots r) x
         ORDER BY x.part, x.n
        RETURNING stage, step_id, decision_id
    ), queued AS (
        INSERT INTO warden.jobs
            (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority, input,
             upstream, constraints, timeout_ms, available_at, policy_snapshot_hash)
        SELECT p_tenant_id, r.job_id, p_run_id, r.step_id, 1, r.topic, 'pending',
               p_priority * 10 + r.priority,
               CASE WHEN jsonb_typeof(r.input) = 'object' THEN r.input ELSE p_input END,
               '{}', '{}', r.timeout_ms, v_now, v_snapshot
          FROM roots r
        RETURNING step_id
    )
    SELECT jsonb_build_array(jsonb_build_object(
               'kind', 'run.created', 'actor', p_created_by,
               'data', jsonb_build_object('workflow_id', p_workflow_id, 'version', v_version,
                                          'idempotency_key', p_idempotency_key)
                       || CASE WHEN p_started_by_event IS NULL THEN '{}'::jsonb
                               ELSE jsonb_build_object('started_by_event', p_started_by_event)
                          END))
           || coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'kind', 'policy.decision', 'step_id', s.step_id, 'actor', 'policy',
                  'data', jsonb_build_object(
                      'stage', 'submit', 'decision', 'allow', 'rule', s.rule,
                      'reason', s.reason, 'constraints', '{}'::jsonb,
                      'snapshot_hash', v_snapshot, 'decision_id', d.decision_id))
                  ORDER BY s.n)
                FROM submits s
                JOIN decided d ON d.stage = 'submit' AND d.step_id = s.step_id), '[]')
           || jsonb_build_array(jsonb_build_object('kind', 'run.started', 'actor', 'scheduler',
                                                   'data', '{}'::jsonb))
           -- each root's three events, root by root, as the scheduler's pass writes them
           || (SELECT jsonb_agg(e.event ORDER BY r.n, e.k)
                 FROM roots r
                 JOIN decided d ON d.stage = 'dispatch' AND d.step_id = r.step_id
                 JOIN queued q ON q.step_id = r.step_id
                CROSS JOIN LATERAL (VALUES
                      (1, jsonb_build_object('kind', 'step.ready', 'step_id', r.step_id,
                                             'actor', 'scheduler', 'data', '{}'::jsonb)),
                      (2, jsonb_build_object(
                          'kind', 'policy.decision', 'step_id', r.step_id, 'job_id', r.job_id,
                          'attempt', 1, 'actor', 'policy',
                          'data', jsonb_build_object(
                              'stage', 'dispatch', 'decision', 'allow', 'rule', r.rule,
                              'reason', r.reason, 'constraints', '{}'::jsonb,
                              'snapshot_hash', v_snapshot, 'decision_id', d.decision_id))),
                      (3, jsonb_build_object(
                          'kind', 'job.dispatched', 'step_id', r.step_id, 'job_id', r.job_id,
                          'attempt', 1, 'actor', 'scheduler',
                          'data', jsonb_build_object('topic', r.topic,
                                                     'available_at', v_now,
                                                     'constraints', '{}'::jsonb)))
                      ) AS e(k, event))
      INTO v_events;

    -- one run's events: the single-run append, not the batch's (its JSON, its loop over
    -- runs and its layers cost 0.1 ms of a 1.3 ms start; bench/README.md, session 14)
    PERFORM warden.append_events(p_tenant_id, p_run_id, v_events);
    -- the workers of each root's topic, at commit (as engine/store/jobs.py announce)
    PERFORM pg_notify('warden_jobs', t.topic)
       FROM (SELECT DISTINCT e.d->>'topic' AS topic
               FROM jsonb_array_elements(v_plan.roots) AS e(d)) t;

    RETURN QUERY SELECT * FROM warden.runs u
                  WHERE u.tenant_id = p_tenant_id AND u.run_id = p_run_id;
END $$;
-- The engine's alone (its grant: sql/grants/20_privileges.sql).
REVOKE EXECUTE ON FUNCTION warden.start_planned_run(text, text, text, uuid, jsonb, text, text,
                                                    smallint, text, jsonb) FROM PUBLIC;
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
    v_events     jsonb;
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
    v_batch      jsonb := '[]';  -- every run's events, appended in one call at the end
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
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
        -- appended in one call at its end (append_events_for_runs_unscoped, or
        -- append_events_unscoped where they are all one run's: one INSERT; unscoped, as a
        -- worker session carries no tenant scope: the grants were checked above), not
        -- once per claimed job: a fan-out's workers and its scheduler would
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
    IF v_run IS NOT NULL AND v_batch = '[]' THEN
        -- every job claimed is one run's (a lone claim, a fan-out's jobs): the single-run
        -- append, without the batch's JSON and its loop over runs (bench/README.md,
        -- session 14)
        PERFORM warden.append_events_unscoped(v_tenant, v_run, v_events);
    ELSIF v_run IS NOT NULL THEN
        v_batch := v_batch || jsonb_build_array(jsonb_build_object(
            'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
        PERFORM warden.append_events_for_runs_unscoped(v_batch);
    END IF;
END $$;
RESET ROLE;
"""

DOWNGRADE = r"""
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
-- Starts one run in one call where a start plan covers it (sql/schema/63_start_plans.sql,
-- docs/design.md#starts-in-one-call): the run, its steps, its submit decisions, its first
-- steps dispatched (attempt, job, dispatch decision), its events and the workers' wake-up,
-- in the caller's transaction — the rows and events the engine's Python path writes for
-- such a start (engine/runs/lifecycle.py start_many, then its scheduler pass), without a
-- round trip between them. That path took 16 round trips; the run's first job waited on
-- all of them.
--
-- Returns the new run as it stands. Where the idempotency key is taken already (by a
-- committed run, or by one whose transaction this one waited for), that run instead, and
-- nothing is written: a run id other than p_run_id, which the caller replays or refuses
-- by its request digest. No row when nothing covers the start: no such workflow or
-- version (in the session's scope), no active snapshot, no plan for the version under it;
-- nothing is written then either, and the caller starts the run through its Python path,
-- which raises or starts it as it always does.
--
-- SECURITY INVOKER: it writes with the caller's own privileges and under its row-level
-- security, so an engine session can start nothing here it could not start statement by
-- statement (the timeline through warden.append_events_for_runs, which checks the scope).
-- The input, key and digest are the caller's, checked as the Python path checks them.
CREATE OR REPLACE FUNCTION warden.start_planned_run(
    p_tenant_id text, p_workflow_id text, p_version text, p_run_id uuid, p_input jsonb,
    p_idempotency_key text, p_request_digest text, p_priority smallint, p_created_by text,
    p_started_by_event jsonb)
RETURNS SETOF warden.runs
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: every statement is a keyed lookup or a write of one
-- run's rows, whatever the arguments
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_version  text := p_version;
    v_snapshot text;
    v_plan     warden.start_plans;
    v_run      warden.runs;
    v_events   jsonb;
    -- the transaction's time on the database clock, read once: warden.now() is a SQL
    -- function the planner cannot inline, and each call cost tens of microseconds
    v_now      timestamptz := warden.now();
BEGIN
    IF v_version IS NULL THEN  -- the newest, as workflow_latest orders them
        SELECT w.version INTO v_version FROM warden.workflows w
         WHERE w.tenant_id = p_tenant_id AND w.workflow_id = p_workflow_id
         ORDER BY w.version_major DESC, w.version_minor DESC, w.version_patch DESC,
                  w.version_pre IS NULL DESC, w.version_pre DESC
         LIMIT 1;
    END IF;
    SELECT a.snapshot_hash INTO v_snapshot FROM warden.policy_active a
     WHERE a.tenant_id = p_tenant_id;
    SELECT * INTO v_plan FROM warden.start_plans p
     WHERE p.tenant_id = p_tenant_id AND p.workflow_id = p_workflow_id
       AND p.workflow_version = v_version AND p.snapshot_hash = v_snapshot;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    -- Running from the start, as the start's scheduler pass leaves it (runs_end_pass):
    -- one row version instead of an insert and an update
    INSERT INTO warden.runs
        (tenant_id, run_id, workflow_id, workflow_version, status, input, idempotency_key,
         request_digest, created_by, deadline_at, priority, pins, created_at, started_at,
         needs_scheduling)
    VALUES (p_tenant_id, p_run_id, p_workflow_id, v_version, 'running', p_input,
            p_idempotency_key, p_request_digest, p_created_by,
            v_now + make_interval(secs => v_plan.timeout_ms / 1000.0),
            p_priority, '{}', v_now, v_now, false)
    ON CONFLICT ON CONSTRAINT runs_idempotency DO NOTHING
    RETURNING * INTO v_run;
    IF NOT FOUND THEN  -- the key is taken: that run, for the caller to replay or refuse
        RETURN QUERY SELECT * FROM warden.runs u
                      WHERE u.tenant_id = p_tenant_id AND u.workflow_id = p_workflow_id
                        AND u.idempotency_key = p_idempotency_key;
        RETURN;
    END IF;

    -- the roots running their first attempt, the other steps pending
    INSERT INTO warden.steps
        (tenant_id, run_id, step_id, type, status, depends_on, topic, attempts, max_attempts,
         backoff_ms, max_backoff_ms, multiplier, jitter, timeout_ms, priority, started_at)
    SELECT p_tenant_id, p_run_id, s.step_id, s.type,
           CASE WHEN r.step_id IS NULL THEN 'pending' ELSE 'running' END::warden.step_status,
           s.depends_on, s.topic, CASE WHEN r.step_id IS NULL THEN 0 ELSE 1 END,
           s.max_attempts, s.backoff_ms, s.max_backoff_ms, s.multiplier, s.jitter,
           s.timeout_ms, s.priority, CASE WHEN r.step_id IS NOT NULL THEN v_now END
      FROM jsonb_to_recordset(v_plan.steps) AS s(
           step_id text, type warden.step_type, depends_on text[], topic text,
           max_attempts int, backoff_ms int, max_backoff_ms int, multiplier float8,
           jitter float8, timeout_ms int, priority smallint)
      LEFT JOIN jsonb_to_recordset(v_plan.roots) AS r(step_id text) ON r.step_id = s.step_id
     ORDER BY s.step_id;

    WITH submits AS (
        SELECT e.d->>'step_id' AS step_id, e.d->>'rule' AS rule, e.d->>'reason' AS reason, e.n
          FROM jsonb_array_elements(v_plan.submits) WITH ORDINALITY AS e(d, n)
    ), roots AS (
        SELECT e.d->>'step_id' AS step_id, e.d->>'topic' AS topic,
               (e.d->>'priority')::smallint AS priority, (e.d->>'timeout_ms')::integer
               AS timeout_ms, e.d->'input' AS input, e.d->>'rule' AS rule,
               e.d->>'reason' AS reason, e.n,
               p_run_id::text || ':' || (e.d->>'step_id') || '@1' AS job_id
          FROM jsonb_array_elements(v_plan.roots) WITH ORDINALITY AS e(d, n)
    ), decided AS (
        -- the submit decisions first, then the dispatches, as the Python path's two batches
        INSERT INTO warden.policy_decisions
            (tenant_id, stage, snapshot_hash, rule, decision, reason, constraints, run_id,
             step_id, job_id, run_created_at)
        SELECT p_tenant_id, x.stage::warden.policy_stage, v_snapshot, x.rule, 'allow',
               x.reason, '{}', p_run_id, x.step_id, x.job_id, v_run.created_at
          FROM (SELECT 0 AS part, s.n, 'submit' AS stage, s.step_id, NULL::text AS job_id,
                       s.rule, s.reason FROM submits s
                UNION ALL
                SELECT 1, r.n, 'dispatch', r.step_id, r.job_id, r.rule, r.reason
                  FROM roots r) x
         ORDER BY x.part, x.n
        RETURNING stage, step_id, decision_id
    ), queued AS (
        INSERT INTO warden.jobs
            (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority, input,
             upstream, constraints, timeout_ms, available_at, policy_snapshot_hash)
        SELECT p_tenant_id, r.job_id, p_run_id, r.step_id, 1, r.topic, 'pending',
               p_priority * 10 + r.priority,
               CASE WHEN jsonb_typeof(r.input) = 'object' THEN r.input ELSE p_input END,
               '{}', '{}', r.timeout_ms, v_now, v_snapshot
          FROM roots r
        RETURNING step_id
    )
    SELECT jsonb_build_array(jsonb_build_object(
               'kind', 'run.created', 'actor', p_created_by,
               'data', jsonb_build_object('workflow_id', p_workflow_id, 'version', v_version,
                                          'idempotency_key', p_idempotency_key)
                       || CASE WHEN p_started_by_event IS NULL THEN '{}'::jsonb
                               ELSE jsonb_build_object('started_by_event', p_started_by_event)
                          END))
           || coalesce((SELECT jsonb_agg(jsonb_build_object(
                  'kind', 'policy.decision', 'step_id', s.step_id, 'actor', 'policy',
                  'data', jsonb_build_object(
                      'stage', 'submit', 'decision', 'allow', 'rule', s.rule,
                      'reason', s.reason, 'constraints', '{}'::jsonb,
                      'snapshot_hash', v_snapshot, 'decision_id', d.decision_id))
                  ORDER BY s.n)
                FROM submits s
                JOIN decided d ON d.stage = 'submit' AND d.step_id = s.step_id), '[]')
           || jsonb_build_array(jsonb_build_object('kind', 'run.started', 'actor', 'scheduler',
                                                   'data', '{}'::jsonb))
           -- each root's three events, root by root, as the scheduler's pass writes them
           || (SELECT jsonb_agg(e.event ORDER BY r.n, e.k)
                 FROM roots r
                 JOIN decided d ON d.stage = 'dispatch' AND d.step_id = r.step_id
                 JOIN queued q ON q.step_id = r.step_id
                CROSS JOIN LATERAL (VALUES
                      (1, jsonb_build_object('kind', 'step.ready', 'step_id', r.step_id,
                                             'actor', 'scheduler', 'data', '{}'::jsonb)),
                      (2, jsonb_build_object(
                          'kind', 'policy.decision', 'step_id', r.step_id, 'job_id', r.job_id,
                          'attempt', 1, 'actor', 'policy',
                          'data', jsonb_build_object(
                              'stage', 'dispatch', 'decision', 'allow', 'rule', r.rule,
                              'reason', r.reason, 'constraints', '{}'::jsonb,
                              'snapshot_hash', v_snapshot, 'decision_id', d.decision_id))),
                      (3, jsonb_build_object(
                          'kind', 'job.dispatched', 'step_id', r.step_id, 'job_id', r.job_id,
                          'attempt', 1, 'actor', 'scheduler',
                          'data', jsonb_build_object('topic', r.topic,
                                                     'available_at', v_now,
                                                     'constraints', '{}'::jsonb)))
                      ) AS e(k, event))
      INTO v_events;

    PERFORM warden.append_events_for_runs(jsonb_build_array(jsonb_build_object(
        'tenant_id', p_tenant_id, 'run_id', p_run_id, 'events', v_events)));
    -- the workers of each root's topic, at commit (as engine/store/jobs.py announce)
    PERFORM pg_notify('warden_jobs', t.topic)
       FROM (SELECT DISTINCT e.d->>'topic' AS topic
               FROM jsonb_array_elements(v_plan.roots) AS e(d)) t;

    RETURN QUERY SELECT * FROM warden.runs u
                  WHERE u.tenant_id = p_tenant_id AND u.run_id = p_run_id;
END $$;
-- The engine's alone (its grant: sql/grants/20_privileges.sql).
REVOKE EXECUTE ON FUNCTION warden.start_planned_run(text, text, text, uuid, jsonb, text, text,
                                                    smallint, text, jsonb) FROM PUBLIC;
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
    v_events     jsonb;
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
    v_batch      jsonb := '[]';  -- every run's events, appended in one call at the end
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
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
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
