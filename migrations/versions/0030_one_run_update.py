"""One update of the run row per completion: warden.complete_jobs writes each run's
timeline head together with its end (or its wake-up), where it wrote the head in one
update and the end in a second. The chain of warden.append_events_for_runs_unscoped is
its own function, warden.chain_events_for_runs, which returns the heads instead of
writing them (docs/design.md#the-timeline).

Revision ID: 0030_one_run_update
Revises: 0029_sweeps
Create Date: 2026-12-07

Frozen. The functions are verbatim copies of sql/functions/chain_events_for_runs.sql,
append_events_for_runs_unscoped.sql and complete_jobs.sql as of this change; the
downgrade restores the two before and drops the chain.
"""

from alembic import op

revision = "0030_one_run_update"
down_revision = "0029_sweeps"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Chains and inserts the events of several runs, each run's in order, with one INSERT
-- for all of them, and returns each run's new head (its last seq and hash, one entry per
-- run, in (tenant, run) order) WITHOUT moving it: the caller must write the heads to the
-- runs in the same transaction, with whatever else it changes on those rows (a
-- completion's end, docs/design.md#the-timeline), so each run row takes one update, not
-- two. warden.append_events_for_runs_unscoped is this plus that update. p_batch: a JSON
-- array of {tenant_id, run_id, events}, at most one entry per run, events as
-- append_events takes them ({kind, step_id, job_id, attempt, actor, data}).
--
-- A caller that forgot the heads cannot fork a chain: the next append would number from
-- the old head and collide with these events' (tenant, run, seq) key. No role but the
-- owner may call it (it appends to any tenant's runs and leaves the head to its caller).
--
-- Same chain and same locks as append_events: the runs are locked FOR NO KEY UPDATE in
-- (tenant, run) order (each as the loop below finds it, in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.chain_events_for_runs(
    p_batch jsonb, OUT tenant_ids text[], OUT run_ids uuid[], OUT seqs bigint[],
    OUT hashes text[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: its statements have one shape whatever the batch,
-- and planning them per call cost more than appending a run's few events
SET plan_cache_mode = force_generic_plan AS $$
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
BEGIN
    tenant_ids := '{}';
    run_ids := '{}';
    seqs := '{}';
    hashes := '{}';
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    -- warden.clock_timestamp(), with the clock's shift read once per call, not per event
    -- (sql/functions/clock_timestamp.sql: tests move the database clock)
    v_shift := coalesce((SELECT c.shift FROM warden.clock c), interval '0');
    -- Each run is found by its primary key from the batch's entries, in (tenant, run)
    -- order, and locked as it is found. A join the planner may choose (it made a
    -- generic plan of a hash join over a scan of every run for a batch of one, the batch
    -- size it cannot know) costs per run in the table, not per run in the batch
    -- (docs/design.md#plans-that-age).
    FOR r IN
        SELECT x.tenant_id, x.run_id, x.events, u.timeline_seq, u.timeline_hash, u.created_at
          FROM (SELECT b.tenant_id, b.run_id, b.events
                  FROM jsonb_to_recordset(p_batch) AS b(tenant_id text, run_id uuid,
                                                        events jsonb)
                 WHERE jsonb_array_length(b.events) > 0
                 ORDER BY b.tenant_id, b.run_id) AS x
         CROSS JOIN LATERAL (
               SELECT w.timeline_seq, w.timeline_hash, w.created_at FROM warden.runs w
                WHERE w.tenant_id = x.tenant_id AND w.run_id = x.run_id
                OFFSET 0 FOR NO KEY UPDATE) AS u
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
        tenant_ids[h] := r.tenant_id;
        run_ids[h] := r.run_id;
        seqs[h] := v_seq;
        hashes[h] := v_prev;
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
END $$;
REVOKE EXECUTE ON FUNCTION warden.chain_events_for_runs(jsonb) FROM PUBLIC;

-- Appends the events of several runs, each run's in order, with one INSERT for all of
-- them and one UPDATE of all their heads (append_events, set-based: a scheduler pass, a
-- batch start or a batch of completions writes thousands of events at once, and one
-- INSERT per event was most of what the timeline cost). p_batch: a JSON array of
-- {tenant_id, run_id, events}, at most one entry per run, events as append_events takes
-- them ({kind, step_id, job_id, attempt, actor, data}). Asks nobody's scope: the engine
-- reaches it through warden.append_events_for_runs, which checks the session's tenant
-- scope; claim_jobs calls it directly.
--
-- warden.chain_events_for_runs locks the runs, chains the events and inserts them; this
-- moves the heads it returns. complete_jobs calls the chain itself and moves the heads in
-- the same update as the runs' ends.
CREATE OR REPLACE FUNCTION warden.append_events_for_runs_unscoped(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call, as the chain's (sql/functions/chain_events_for_runs.sql)
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    h_tenant text[];
    h_run    uuid[];
    h_seq    bigint[];
    h_hash   text[];
BEGIN
    SELECT c.tenant_ids, c.run_ids, c.seqs, c.hashes INTO h_tenant, h_run, h_seq, h_hash
      FROM warden.chain_events_for_runs(p_batch) c;
    -- one run (a start, a claim or a completion of one job): by its primary key (a generic
    -- plan of the join below was a hash join over a scan of every run, for a batch of
    -- one: docs/design.md#plans-that-age); a batch of several: one join (an UPDATE per
    -- run cost 15-30 us a run more for a batch of 32, bench/README.md)
    IF cardinality(h_run) = 1 THEN
        UPDATE warden.runs u SET timeline_seq = h_seq[1], timeline_hash = h_hash[1]
         WHERE u.tenant_id = h_tenant[1] AND u.run_id = h_run[1];
    ELSIF cardinality(h_run) > 1 THEN
        UPDATE warden.runs u SET timeline_seq = x.seq, timeline_hash = x.hash
          FROM unnest(h_tenant, h_run, h_seq, h_hash) AS x(tenant_id, run_id, seq, hash)
         WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    END IF;
END $$;
-- No role but the owner may call it: it appends to any tenant's runs. claim_jobs
-- (SECURITY DEFINER, which checks the worker's grants and leases itself) calls it as the
-- owner; the engine calls warden.append_events_for_runs, which checks the
-- session's tenant scope first.
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs_unscoped(jsonb) FROM PUBLIC;

-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: the statements below are shaped for batches (index
-- lookups per element of v_done, whatever its size), and a custom plan per call cost more
-- to make (~2.5 ms for a batch of 32) than running the whole batch (~0.8 ms)
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_done    warden.jobs[];
    -- the runs to flag for the scheduler, and whether each one ends here (with its output)
    v_tenants text[];
    v_runs    uuid[];
    v_ends    boolean[];
    v_outputs jsonb[];
    -- each run's new timeline head (warden.chain_events_for_runs), written with its end
    h_tenants text[];
    h_runs    uuid[];
    h_seqs    bigint[];
    h_hashes  text[];
    -- the steps to dispatch here, one array per column, and what that wrote: each run's
    -- events, the topics to wake
    d_tenants    text[];
    d_runs       uuid[];
    d_steps      text[];
    d_topics     text[];
    d_priorities integer[];
    d_timeouts   integer[];
    d_inputs     jsonb[];
    d_upstreams  jsonb[];
    d_rules      text[];
    d_reasons    text[];
    d_snapshots  text[];
    d_created    timestamptz[];
    v_started    integer;
    v_dispatched jsonb := '[]';
    v_topics     text[] := '{}';
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- The jobs are locked by this UPDATE (each has one lease holder, so two completers
    -- never contend for a job); the runs next, below. The completed rows are kept in a
    -- variable, not a temporary table: a temp table per call would churn the system
    -- catalogs on the hottest path there is.
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

    -- Lock order jobs -> runs -> steps: the runs, in (tenant, run) order as claim_jobs and
    -- the reaper take them, before any step is written or read. What follows reads the
    -- other steps of each run, which another completion may be writing: holding the run
    -- orders the two, so of two completions racing for a run's last running steps, the
    -- second one in reads (statement snapshot, READ COMMITTED) the first one's committed
    -- step. Every writer of a step's status holds its run's lock.
    PERFORM 1 FROM warden.runs u
      JOIN (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
        ON u.tenant_id = c.tenant_id AND u.run_id = c.run_id
     ORDER BY u.tenant_id, u.run_id
       FOR NO KEY UPDATE OF u;

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

    -- The steps these completions made ready, dispatched here where a dispatch plan
    -- allows it (sql/schema/62_dispatch_plans.sql, docs/design.md#dispatch-in-the-completion):
    -- a pending job step not yet attempted whose dependencies have all succeeded (every
    -- trigger makes such a step ready: engine/definitions/dag.py), of a running run within
    -- its deadline, with a plan for its workflow version under its tenant's active
    -- snapshot. Written as the scheduler's dispatch gate writes it
    -- (engine/scheduling/dispatch.py): the attempt, the pending job, the decision and its
    -- record, and the events step.ready, policy.decision and job.dispatched; the topic's
    -- workers are woken at commit. Whatever else became ready is the scheduler's: the
    -- wake-up rules below, which read the steps as this leaves them, flag the run for it.
    -- Every lookup is LATERAL from the batch's runs, by primary key, each fenced with
    -- OFFSET 0 so the planner cannot flatten it and re-join it some other way, and the
    -- writes are driven by arrays. On a generic plan made while the tables' statistics
    -- said they were empty, the flattened form probed the steps by tenant alone (the
    -- run's key known only through an equivalence) and walked every pending step of the
    -- tenant per run of the batch: ~1 s a call in the chain bench.
    -- (no plan anywhere: an installation without snapshots, say, reads nothing here)
    IF EXISTS (SELECT 1 FROM warden.dispatch_plans) THEN
        SELECT coalesce(array_agg(r.tenant_id), '{}'), coalesce(array_agg(r.run_id), '{}'),
               coalesce(array_agg(r.step_id), '{}'), coalesce(array_agg(r.topic), '{}'),
               coalesce(array_agg(r.priority), '{}'), coalesce(array_agg(r.timeout_ms), '{}'),
               coalesce(array_agg(r.input), '{}'), coalesce(array_agg(r.upstream), '{}'),
               coalesce(array_agg(r.rule), '{}'), coalesce(array_agg(r.reason), '{}'),
               coalesce(array_agg(r.snapshot_hash), '{}'),
               coalesce(array_agg(r.run_created_at), '{}')
          INTO d_tenants, d_runs, d_steps, d_topics, d_priorities, d_timeouts, d_inputs,
               d_upstreams, d_rules, d_reasons, d_snapshots, d_created
          FROM (SELECT c.tenant_id, c.run_id, array_agg(c.step_id) AS step_ids
                  FROM unnest(v_done) c
                 WHERE c.item_index IS NULL
                 GROUP BY c.tenant_id, c.run_id) d
         CROSS JOIN LATERAL (
               SELECT u.workflow_id, u.workflow_version, u.priority, u.input, u.created_at
                 FROM warden.runs u
                WHERE u.tenant_id = d.tenant_id AND u.run_id = d.run_id
                  AND u.status = 'running'
                  AND (u.deadline_at IS NULL OR u.deadline_at > warden.now())
               OFFSET 0) u
         CROSS JOIN LATERAL (
               SELECT a.snapshot_hash FROM warden.policy_active a
                WHERE a.tenant_id = d.tenant_id) a
         -- a run of a version with no plan under the snapshot (a one-step or fan-out
         -- workflow has none) costs this probe, not a walk over its steps
         CROSS JOIN LATERAL (
               SELECT true AS has_plan FROM warden.dispatch_plans p
                WHERE p.tenant_id = d.tenant_id AND p.workflow_id = u.workflow_id
                  AND p.workflow_version = u.workflow_version
                  AND p.snapshot_hash = a.snapshot_hash
                LIMIT 1) planned
         CROSS JOIN LATERAL (
               SELECT s.step_id, s.topic, s.timeout_ms, s.priority, s.depends_on
                 FROM warden.steps s
                WHERE s.tenant_id = d.tenant_id AND s.run_id = d.run_id
                  AND s.status = 'pending' AND s.type = 'job' AND s.attempts = 0
                  AND s.depends_on && d.step_ids
                  AND planned.has_plan  -- so the planner cannot walk the steps before the probe
               OFFSET 0) s
         CROSS JOIN LATERAL (
               SELECT p.rule, p.reason, p.input FROM warden.dispatch_plans p
                WHERE p.tenant_id = d.tenant_id AND p.workflow_id = u.workflow_id
                  AND p.workflow_version = u.workflow_version
                  AND p.snapshot_hash = a.snapshot_hash AND p.step_id = s.step_id
               OFFSET 0) p
         CROSS JOIN LATERAL (
               -- its dependencies: every one succeeded, and their outputs (its upstream)
               SELECT count(*) FILTER (WHERE o.status <> 'succeeded') AS unfinished,
                      coalesce(jsonb_object_agg(o.step_id, o.output), '{}') AS upstream
                 FROM warden.steps o
                WHERE o.tenant_id = d.tenant_id AND o.run_id = d.run_id
                  AND o.step_id = ANY (s.depends_on)) o
         CROSS JOIN LATERAL (
               SELECT d.tenant_id, d.run_id, s.step_id, s.topic,
                      u.priority * 10 + s.priority AS priority, s.timeout_ms,
                      coalesce(p.input, u.input) AS input, o.upstream, p.rule, p.reason,
                      a.snapshot_hash, u.created_at AS run_created_at) r
         WHERE o.unfinished = 0;
    END IF;

    IF cardinality(d_steps) > 0 THEN  -- NULL (nothing read) is not > 0
        WITH ready AS (
            SELECT x.*, x.run_id::text || ':' || x.step_id || '@1' AS job_id
              FROM unnest(d_tenants, d_runs, d_steps, d_topics, d_priorities, d_timeouts,
                          d_inputs, d_upstreams, d_rules, d_reasons, d_snapshots, d_created)
                   AS x(tenant_id, run_id, step_id, topic, priority, timeout_ms, input,
                        upstream, rule, reason, snapshot_hash, run_created_at)
        ), started AS (
            -- under the run's lock (taken above): still pending, as read
            UPDATE warden.steps s
               SET status = 'running', attempts = 1, retry_at = NULL,
                   started_at = coalesce(s.started_at, warden.now())
              FROM ready r
             WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id AND s.step_id = r.step_id
               AND s.status = 'pending' AND s.attempts = 0
            RETURNING s.tenant_id, s.run_id, s.step_id
        ), queued AS (
            INSERT INTO warden.jobs
                (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority,
                 input, upstream, constraints, timeout_ms, available_at,
                 policy_snapshot_hash)
            SELECT r.tenant_id, r.job_id, r.run_id, r.step_id, 1, r.topic, 'pending',
                   r.priority, r.input, r.upstream, '{}', r.timeout_ms, warden.now(),
                   r.snapshot_hash
              FROM ready r
            RETURNING tenant_id, job_id
        ), decided AS (
            INSERT INTO warden.policy_decisions
                (tenant_id, stage, snapshot_hash, rule, decision, reason, constraints,
                 run_id, step_id, job_id, run_created_at)
            SELECT r.tenant_id, 'dispatch', r.snapshot_hash, r.rule, 'allow', r.reason,
                   '{}', r.run_id, r.step_id, r.job_id, r.run_created_at
              FROM ready r
            RETURNING tenant_id, job_id, decision_id
        )
        SELECT jsonb_agg(jsonb_build_object(
                   'tenant_id', r.tenant_id, 'run_id', r.run_id, 'step_id', r.step_id,
                   'events', jsonb_build_array(
                       jsonb_build_object('kind', 'step.ready', 'step_id', r.step_id,
                                          'actor', 'scheduler', 'data', '{}'::jsonb),
                       jsonb_build_object('kind', 'policy.decision', 'step_id', r.step_id,
                                          'job_id', r.job_id, 'attempt', 1, 'actor', 'policy',
                                          'data', jsonb_build_object(
                                              'stage', 'dispatch', 'decision', 'allow',
                                              'rule', r.rule, 'reason', r.reason,
                                              'constraints', '{}'::jsonb,
                                              'snapshot_hash', r.snapshot_hash,
                                              'decision_id', x.decision_id)),
                       jsonb_build_object('kind', 'job.dispatched', 'step_id', r.step_id,
                                          'job_id', r.job_id, 'attempt', 1,
                                          'actor', 'scheduler',
                                          'data', jsonb_build_object(
                                              'topic', r.topic, 'available_at', warden.now(),
                                              'constraints', '{}'::jsonb))))),
               array_agg(DISTINCT r.topic),
               count(t.step_id)
          INTO v_dispatched, v_topics, v_started
          FROM ready r
          JOIN queued q ON q.tenant_id = r.tenant_id AND q.job_id = r.job_id
          JOIN decided x ON x.tenant_id = r.tenant_id AND x.job_id = r.job_id
          LEFT JOIN started t ON t.tenant_id = r.tenant_id AND t.run_id = r.run_id
                             AND t.step_id = r.step_id;
        -- every step read above is still pending: the run locks order every writer of a
        -- step's status, so a step moved by someone else here is a bug worth stopping on
        IF v_started <> cardinality(d_steps) THEN
            RAISE EXCEPTION 'a step to dispatch changed under its run lock'
                USING ERRCODE = 'WD500';
        END IF;
    END IF;
    -- What each run now needs (the rules of engine/definitions/dag.py, docs/design.md#scale-path):
    -- * it ENDS here when every step is succeeded or skipped, for a plain run (no parent
    --   to wake, no `output:` mapping to evaluate, no for_each item just ended): succeeded,
    --   its output the sink steps' outputs, as the scheduler would write them. It is
    --   marked end_unobserved, not flagged: a serve's observer records the end (metrics,
    --   traces) in batches, with no scheduler pass and no wake-up (runs_observe_ends);
    -- * it is WOKEN (flagged) only where the scheduler has something to decide: a for_each
    --   item ended, a pending step that depends on a completed one has all its
    --   dependencies final (every trigger waits for that), or no step is running any more
    --   (the run settles otherwise, or waits on an approval or a timer). A fan-out branch
    --   ending while its siblings run costs no pass over the whole run.
    WITH ended AS (
        SELECT c.tenant_id, c.run_id, array_agg(c.step_id) AS step_ids,
               bool_or(c.item_index IS NOT NULL) AS items
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
    ), counted AS (
        -- one walk over each run's steps (a fan-out run has hundreds)
        SELECT e.*, u.status AS run_status, u.parent_run_id, u.workflow_id,
               u.workflow_version, k.running, k.open, k.dependents
          FROM ended e
          JOIN warden.runs u ON u.tenant_id = e.tenant_id AND u.run_id = e.run_id
         CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE s.status = 'running') AS running,
                      count(*) FILTER (WHERE s.status NOT IN ('succeeded', 'skipped')) AS open,
                      count(*) FILTER (WHERE s.status = 'pending'
                                         AND s.depends_on && e.step_ids) AS dependents
                 FROM warden.steps s
                WHERE s.tenant_id = e.tenant_id AND s.run_id = e.run_id) k
    ), judged AS (
        SELECT k.tenant_id, k.run_id,
               -- CASE, so the workflow's definition (large for a wide fan-out) is read
               -- only for a run that would otherwise end here
               CASE WHEN NOT k.items AND k.run_status = 'running'
                         AND k.parent_run_id IS NULL AND k.open = 0
                    THEN NOT (SELECT w.definition ? 'output' FROM warden.workflows w
                               WHERE w.tenant_id = k.tenant_id
                                 AND w.workflow_id = k.workflow_id
                                 AND w.version = k.workflow_version)
                    ELSE false END AS ends,
               k.items OR k.running = 0
               OR (k.dependents > 0
                   AND EXISTS (SELECT 1 FROM warden.steps s
                                WHERE s.tenant_id = k.tenant_id AND s.run_id = k.run_id
                                  AND s.status = 'pending' AND s.depends_on && k.step_ids
                                  AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                                   WHERE d.tenant_id = s.tenant_id
                                                     AND d.run_id = s.run_id
                                                     AND d.step_id = ANY (s.depends_on)
                                                     AND d.status IN ('pending', 'running',
                                                                      'waiting')))) AS due
          FROM counted k
    )
    SELECT coalesce(array_agg(j.tenant_id), '{}'), coalesce(array_agg(j.run_id), '{}'),
           coalesce(array_agg(j.ends), '{}'),
           coalesce(array_agg(CASE WHEN j.ends THEN (
               -- the sink steps' outputs (dag.sink_steps: steps nothing depends on)
               SELECT coalesce(jsonb_object_agg(s.step_id, s.output), '{}')
                 FROM warden.steps s
                WHERE s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                  AND s.status = 'succeeded'
                  AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                   WHERE d.tenant_id = s.tenant_id AND d.run_id = s.run_id
                                     AND s.step_id = ANY (d.depends_on))) END), '{}')
      INTO v_tenants, v_runs, v_ends, v_outputs
      FROM judged j
     WHERE j.ends OR j.due;

    -- every run's events in one INSERT, a run that ends here closing with run.succeeded
    -- (unscoped: a worker session carries no tenant scope, and the leases were checked
    -- above); the chain leaves the runs' heads to the update below
    SELECT c.tenant_ids, c.run_ids, c.seqs, c.hashes INTO h_tenants, h_runs, h_seqs, h_hashes
      FROM warden.chain_events_for_runs(coalesce((
        SELECT jsonb_agg(jsonb_build_object('tenant_id', g.tenant_id, 'run_id', g.run_id,
                                            'events', g.events))
          FROM (SELECT c.tenant_id, c.run_id,
                       jsonb_agg(c.event ORDER BY c.stage, c.key, c.n) AS events
                  FROM (SELECT j.tenant_id, j.run_id, 0 AS stage, j.job_id AS key, 0 AS n,
                               jsonb_build_object('kind', 'job.succeeded',
                                                  'step_id', j.step_id, 'job_id', j.job_id,
                                                  'attempt', j.attempt, 'actor', j.worker,
                                                  'data', '{}'::jsonb) AS event
                          FROM unnest(v_done) j
                        UNION ALL
                        -- each dispatched step's three events, in order, step by step
                        SELECT d.value->>'tenant_id', (d.value->>'run_id')::uuid, 1,
                               d.value->>'step_id', e.n, e.event
                          FROM jsonb_array_elements(v_dispatched) d
                         CROSS JOIN LATERAL jsonb_array_elements(d.value->'events')
                               WITH ORDINALITY AS e(event, n)
                        UNION ALL
                        -- the scheduler's words (engine/scheduling/scheduler.py, _settle):
                        -- this is its rule, applied in the completing transaction
                        SELECT x.tenant_id, x.run_id, 2, NULL, 0,
                               jsonb_build_object('kind', 'run.succeeded', 'actor', 'scheduler',
                                                  'data', jsonb_build_object('status',
                                                                             'succeeded'))
                          FROM unnest(v_tenants, v_runs, v_ends) AS x(tenant_id, run_id, ends)
                         WHERE x.ends) c
                 GROUP BY c.tenant_id, c.run_id) g), '[]')) c;

    -- One update per run for all of it: the timeline head, and where the run ends or is
    -- woken, that too (two updates, the head's and the end's, wrote every index of runs
    -- twice for each run a completion ended: bench/README.md). Every judged run has a
    -- job.succeeded event, so it is among the heads; a run neither ending nor woken
    -- takes its head only. The judgements are spread over the heads' order by a join
    -- of two arrays (a handful of rows) before the runs are touched by key.
    UPDATE warden.runs u
       SET timeline_seq = x.seq, timeline_hash = x.hash,
           needs_scheduling = u.needs_scheduling OR NOT coalesce(x.ends, true),
           status = CASE WHEN x.ends THEN 'succeeded' ELSE u.status END,
           output = CASE WHEN x.ends THEN x.output ELSE u.output END,
           finished_at = CASE WHEN x.ends THEN warden.now() ELSE u.finished_at END,
           end_unobserved = u.end_unobserved OR coalesce(x.ends, false)
      FROM (SELECT h.tenant_id, h.run_id, h.seq, h.hash, j.ends, j.output
              FROM unnest(h_tenants, h_runs, h_seqs, h_hashes) AS h(tenant_id, run_id, seq, hash)
              LEFT JOIN unnest(v_tenants, v_runs, v_ends, v_outputs)
                        AS j(tenant_id, run_id, ends, output)
                ON j.tenant_id = h.tenant_id AND j.run_id = h.run_id
            OFFSET 0) x
     WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    -- one NOTIFY for the batch when it flagged a run; also for a run flagged already, as
    -- before: its scheduler may have passed it by while this transaction held it locked.
    -- An end wakes nobody: the observer polls for ends.
    IF false = ANY (v_ends) THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;
    -- the workers of each topic that got a job here (as engine/store/jobs.py notify_topics)
    PERFORM pg_notify('warden_jobs', t) FROM unnest(v_topics) AS t;

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
-- (tenant, run) order (each as the loop below finds it, in that order) and held to
-- commit, so each run's seq stays gapless and in commit order; each event's hash is the
-- HMAC of the previous one under the active chain key (sql/schema/55_chain_keys.sql). The
-- hashes are chained in this loop, in memory; only the writes are set-based. Arrays are
-- filled by index (in place), not by concatenation (a copy per element).
CREATE OR REPLACE FUNCTION warden.append_events_for_runs_unscoped(p_batch jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: its statements have one shape whatever the batch,
-- and planning them per call cost more than appending a run's few events
SET plan_cache_mode = force_generic_plan AS $$
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
    -- Each run is found by its primary key from the batch's entries, in (tenant, run)
    -- order, and locked as it is found. A join the planner may choose (it made a
    -- generic plan of a hash join over a scan of every run for a batch of one, the batch
    -- size it cannot know) costs per run in the table, not per run in the batch
    -- (docs/design.md#plans-that-age).
    FOR r IN
        SELECT x.tenant_id, x.run_id, x.events, u.timeline_seq, u.timeline_hash, u.created_at
          FROM (SELECT b.tenant_id, b.run_id, b.events
                  FROM jsonb_to_recordset(p_batch) AS b(tenant_id text, run_id uuid,
                                                        events jsonb)
                 WHERE jsonb_array_length(b.events) > 0
                 ORDER BY b.tenant_id, b.run_id) AS x
         CROSS JOIN LATERAL (
               SELECT w.timeline_seq, w.timeline_hash, w.created_at FROM warden.runs w
                WHERE w.tenant_id = x.tenant_id AND w.run_id = x.run_id
                OFFSET 0 FOR NO KEY UPDATE) AS u
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
    -- one run (a start, a claim or a completion of one job): by its primary key, for the
    -- reason above; a batch of several: one join (an UPDATE per run in the loop above
    -- cost 15-30 us a run more for a batch of 32, bench/README.md)
    IF h = 1 THEN
        UPDATE warden.runs u SET timeline_seq = h_seq[1], timeline_hash = h_hash[1]
         WHERE u.tenant_id = h_tenant[1] AND u.run_id = h_run[1];
    ELSE
        UPDATE warden.runs u SET timeline_seq = x.seq, timeline_hash = x.hash
          FROM unnest(h_tenant, h_run, h_seq, h_hash) AS x(tenant_id, run_id, seq, hash)
         WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    END IF;
END $$;
-- No role but the owner may call it: it appends to any tenant's runs. claim_jobs and
-- complete_jobs (SECURITY DEFINER, which check the worker's grants and leases themselves)
-- call it as the owner; the engine calls warden.append_events_for_runs, which checks the
-- session's tenant scope first.
REVOKE EXECUTE ON FUNCTION warden.append_events_for_runs_unscoped(jsonb) FROM PUBLIC;

-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held), and gets an outcome row instead of
-- an error, so one stale lease does not throw the rest of the batch away: 'completed',
-- or why the write was fenced (warden.fence_outcome: 'lease_lost', 'cancelled',
-- 'not_found').
CREATE OR REPLACE FUNCTION warden.complete_jobs(
    job_ids text[], lease_tokens uuid[], results jsonb[])
RETURNS TABLE (job_id text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call: the statements below are shaped for batches (index
-- lookups per element of v_done, whatever its size), and a custom plan per call cost more
-- to make (~2.5 ms for a batch of 32) than running the whole batch (~0.8 ms)
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_done    warden.jobs[];
    -- the runs to flag for the scheduler, and whether each one ends here (with its output)
    v_tenants text[];
    v_runs    uuid[];
    v_ends    boolean[];
    v_outputs jsonb[];
    -- the steps to dispatch here, one array per column, and what that wrote: each run's
    -- events, the topics to wake
    d_tenants    text[];
    d_runs       uuid[];
    d_steps      text[];
    d_topics     text[];
    d_priorities integer[];
    d_timeouts   integer[];
    d_inputs     jsonb[];
    d_upstreams  jsonb[];
    d_rules      text[];
    d_reasons    text[];
    d_snapshots  text[];
    d_created    timestamptz[];
    v_started    integer;
    v_dispatched jsonb := '[]';
    v_topics     text[] := '{}';
BEGIN
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(lease_tokens)
       OR cardinality(job_ids) IS DISTINCT FROM cardinality(results) THEN
        RAISE EXCEPTION 'job_ids, lease_tokens and results must have the same length'
            USING ERRCODE = '22023';
    END IF;
    -- The jobs are locked by this UPDATE (each has one lease holder, so two completers
    -- never contend for a job); the runs next, below. The completed rows are kept in a
    -- variable, not a temporary table: a temp table per call would churn the system
    -- catalogs on the hottest path there is.
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

    -- Lock order jobs -> runs -> steps: the runs, in (tenant, run) order as claim_jobs and
    -- the reaper take them, before any step is written or read. What follows reads the
    -- other steps of each run, which another completion may be writing: holding the run
    -- orders the two, so of two completions racing for a run's last running steps, the
    -- second one in reads (statement snapshot, READ COMMITTED) the first one's committed
    -- step. Every writer of a step's status holds its run's lock.
    PERFORM 1 FROM warden.runs u
      JOIN (SELECT DISTINCT c.tenant_id, c.run_id FROM unnest(v_done) c) c
        ON u.tenant_id = c.tenant_id AND u.run_id = c.run_id
     ORDER BY u.tenant_id, u.run_id
       FOR NO KEY UPDATE OF u;

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

    -- The steps these completions made ready, dispatched here where a dispatch plan
    -- allows it (sql/schema/62_dispatch_plans.sql, docs/design.md#dispatch-in-the-completion):
    -- a pending job step not yet attempted whose dependencies have all succeeded (every
    -- trigger makes such a step ready: engine/definitions/dag.py), of a running run within
    -- its deadline, with a plan for its workflow version under its tenant's active
    -- snapshot. Written as the scheduler's dispatch gate writes it
    -- (engine/scheduling/dispatch.py): the attempt, the pending job, the decision and its
    -- record, and the events step.ready, policy.decision and job.dispatched; the topic's
    -- workers are woken at commit. Whatever else became ready is the scheduler's: the
    -- wake-up rules below, which read the steps as this leaves them, flag the run for it.
    -- Every lookup is LATERAL from the batch's runs, by primary key, each fenced with
    -- OFFSET 0 so the planner cannot flatten it and re-join it some other way, and the
    -- writes are driven by arrays. On a generic plan made while the tables' statistics
    -- said they were empty, the flattened form probed the steps by tenant alone (the
    -- run's key known only through an equivalence) and walked every pending step of the
    -- tenant per run of the batch: ~1 s a call in the chain bench.
    -- (no plan anywhere: an installation without snapshots, say, reads nothing here)
    IF EXISTS (SELECT 1 FROM warden.dispatch_plans) THEN
        SELECT coalesce(array_agg(r.tenant_id), '{}'), coalesce(array_agg(r.run_id), '{}'),
               coalesce(array_agg(r.step_id), '{}'), coalesce(array_agg(r.topic), '{}'),
               coalesce(array_agg(r.priority), '{}'), coalesce(array_agg(r.timeout_ms), '{}'),
               coalesce(array_agg(r.input), '{}'), coalesce(array_agg(r.upstream), '{}'),
               coalesce(array_agg(r.rule), '{}'), coalesce(array_agg(r.reason), '{}'),
               coalesce(array_agg(r.snapshot_hash), '{}'),
               coalesce(array_agg(r.run_created_at), '{}')
          INTO d_tenants, d_runs, d_steps, d_topics, d_priorities, d_timeouts, d_inputs,
               d_upstreams, d_rules, d_reasons, d_snapshots, d_created
          FROM (SELECT c.tenant_id, c.run_id, array_agg(c.step_id) AS step_ids
                  FROM unnest(v_done) c
                 WHERE c.item_index IS NULL
                 GROUP BY c.tenant_id, c.run_id) d
         CROSS JOIN LATERAL (
               SELECT u.workflow_id, u.workflow_version, u.priority, u.input, u.created_at
                 FROM warden.runs u
                WHERE u.tenant_id = d.tenant_id AND u.run_id = d.run_id
                  AND u.status = 'running'
                  AND (u.deadline_at IS NULL OR u.deadline_at > warden.now())
               OFFSET 0) u
         CROSS JOIN LATERAL (
               SELECT a.snapshot_hash FROM warden.policy_active a
                WHERE a.tenant_id = d.tenant_id) a
         -- a run of a version with no plan under the snapshot (a one-step or fan-out
         -- workflow has none) costs this probe, not a walk over its steps
         CROSS JOIN LATERAL (
               SELECT true AS has_plan FROM warden.dispatch_plans p
                WHERE p.tenant_id = d.tenant_id AND p.workflow_id = u.workflow_id
                  AND p.workflow_version = u.workflow_version
                  AND p.snapshot_hash = a.snapshot_hash
                LIMIT 1) planned
         CROSS JOIN LATERAL (
               SELECT s.step_id, s.topic, s.timeout_ms, s.priority, s.depends_on
                 FROM warden.steps s
                WHERE s.tenant_id = d.tenant_id AND s.run_id = d.run_id
                  AND s.status = 'pending' AND s.type = 'job' AND s.attempts = 0
                  AND s.depends_on && d.step_ids
                  AND planned.has_plan  -- so the planner cannot walk the steps before the probe
               OFFSET 0) s
         CROSS JOIN LATERAL (
               SELECT p.rule, p.reason, p.input FROM warden.dispatch_plans p
                WHERE p.tenant_id = d.tenant_id AND p.workflow_id = u.workflow_id
                  AND p.workflow_version = u.workflow_version
                  AND p.snapshot_hash = a.snapshot_hash AND p.step_id = s.step_id
               OFFSET 0) p
         CROSS JOIN LATERAL (
               -- its dependencies: every one succeeded, and their outputs (its upstream)
               SELECT count(*) FILTER (WHERE o.status <> 'succeeded') AS unfinished,
                      coalesce(jsonb_object_agg(o.step_id, o.output), '{}') AS upstream
                 FROM warden.steps o
                WHERE o.tenant_id = d.tenant_id AND o.run_id = d.run_id
                  AND o.step_id = ANY (s.depends_on)) o
         CROSS JOIN LATERAL (
               SELECT d.tenant_id, d.run_id, s.step_id, s.topic,
                      u.priority * 10 + s.priority AS priority, s.timeout_ms,
                      coalesce(p.input, u.input) AS input, o.upstream, p.rule, p.reason,
                      a.snapshot_hash, u.created_at AS run_created_at) r
         WHERE o.unfinished = 0;
    END IF;

    IF cardinality(d_steps) > 0 THEN  -- NULL (nothing read) is not > 0
        WITH ready AS (
            SELECT x.*, x.run_id::text || ':' || x.step_id || '@1' AS job_id
              FROM unnest(d_tenants, d_runs, d_steps, d_topics, d_priorities, d_timeouts,
                          d_inputs, d_upstreams, d_rules, d_reasons, d_snapshots, d_created)
                   AS x(tenant_id, run_id, step_id, topic, priority, timeout_ms, input,
                        upstream, rule, reason, snapshot_hash, run_created_at)
        ), started AS (
            -- under the run's lock (taken above): still pending, as read
            UPDATE warden.steps s
               SET status = 'running', attempts = 1, retry_at = NULL,
                   started_at = coalesce(s.started_at, warden.now())
              FROM ready r
             WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id AND s.step_id = r.step_id
               AND s.status = 'pending' AND s.attempts = 0
            RETURNING s.tenant_id, s.run_id, s.step_id
        ), queued AS (
            INSERT INTO warden.jobs
                (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority,
                 input, upstream, constraints, timeout_ms, available_at,
                 policy_snapshot_hash)
            SELECT r.tenant_id, r.job_id, r.run_id, r.step_id, 1, r.topic, 'pending',
                   r.priority, r.input, r.upstream, '{}', r.timeout_ms, warden.now(),
                   r.snapshot_hash
              FROM ready r
            RETURNING tenant_id, job_id
        ), decided AS (
            INSERT INTO warden.policy_decisions
                (tenant_id, stage, snapshot_hash, rule, decision, reason, constraints,
                 run_id, step_id, job_id, run_created_at)
            SELECT r.tenant_id, 'dispatch', r.snapshot_hash, r.rule, 'allow', r.reason,
                   '{}', r.run_id, r.step_id, r.job_id, r.run_created_at
              FROM ready r
            RETURNING tenant_id, job_id, decision_id
        )
        SELECT jsonb_agg(jsonb_build_object(
                   'tenant_id', r.tenant_id, 'run_id', r.run_id, 'step_id', r.step_id,
                   'events', jsonb_build_array(
                       jsonb_build_object('kind', 'step.ready', 'step_id', r.step_id,
                                          'actor', 'scheduler', 'data', '{}'::jsonb),
                       jsonb_build_object('kind', 'policy.decision', 'step_id', r.step_id,
                                          'job_id', r.job_id, 'attempt', 1, 'actor', 'policy',
                                          'data', jsonb_build_object(
                                              'stage', 'dispatch', 'decision', 'allow',
                                              'rule', r.rule, 'reason', r.reason,
                                              'constraints', '{}'::jsonb,
                                              'snapshot_hash', r.snapshot_hash,
                                              'decision_id', x.decision_id)),
                       jsonb_build_object('kind', 'job.dispatched', 'step_id', r.step_id,
                                          'job_id', r.job_id, 'attempt', 1,
                                          'actor', 'scheduler',
                                          'data', jsonb_build_object(
                                              'topic', r.topic, 'available_at', warden.now(),
                                              'constraints', '{}'::jsonb))))),
               array_agg(DISTINCT r.topic),
               count(t.step_id)
          INTO v_dispatched, v_topics, v_started
          FROM ready r
          JOIN queued q ON q.tenant_id = r.tenant_id AND q.job_id = r.job_id
          JOIN decided x ON x.tenant_id = r.tenant_id AND x.job_id = r.job_id
          LEFT JOIN started t ON t.tenant_id = r.tenant_id AND t.run_id = r.run_id
                             AND t.step_id = r.step_id;
        -- every step read above is still pending: the run locks order every writer of a
        -- step's status, so a step moved by someone else here is a bug worth stopping on
        IF v_started <> cardinality(d_steps) THEN
            RAISE EXCEPTION 'a step to dispatch changed under its run lock'
                USING ERRCODE = 'WD500';
        END IF;
    END IF;
    -- What each run now needs (the rules of engine/definitions/dag.py, docs/design.md#scale-path):
    -- * it ENDS here when every step is succeeded or skipped, for a plain run (no parent
    --   to wake, no `output:` mapping to evaluate, no for_each item just ended): succeeded,
    --   its output the sink steps' outputs, as the scheduler would write them. It is
    --   marked end_unobserved, not flagged: a serve's observer records the end (metrics,
    --   traces) in batches, with no scheduler pass and no wake-up (runs_observe_ends);
    -- * it is WOKEN (flagged) only where the scheduler has something to decide: a for_each
    --   item ended, a pending step that depends on a completed one has all its
    --   dependencies final (every trigger waits for that), or no step is running any more
    --   (the run settles otherwise, or waits on an approval or a timer). A fan-out branch
    --   ending while its siblings run costs no pass over the whole run.
    WITH ended AS (
        SELECT c.tenant_id, c.run_id, array_agg(c.step_id) AS step_ids,
               bool_or(c.item_index IS NOT NULL) AS items
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
    ), counted AS (
        -- one walk over each run's steps (a fan-out run has hundreds)
        SELECT e.*, u.status AS run_status, u.parent_run_id, u.workflow_id,
               u.workflow_version, k.running, k.open, k.dependents
          FROM ended e
          JOIN warden.runs u ON u.tenant_id = e.tenant_id AND u.run_id = e.run_id
         CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE s.status = 'running') AS running,
                      count(*) FILTER (WHERE s.status NOT IN ('succeeded', 'skipped')) AS open,
                      count(*) FILTER (WHERE s.status = 'pending'
                                         AND s.depends_on && e.step_ids) AS dependents
                 FROM warden.steps s
                WHERE s.tenant_id = e.tenant_id AND s.run_id = e.run_id) k
    ), judged AS (
        SELECT k.tenant_id, k.run_id,
               -- CASE, so the workflow's definition (large for a wide fan-out) is read
               -- only for a run that would otherwise end here
               CASE WHEN NOT k.items AND k.run_status = 'running'
                         AND k.parent_run_id IS NULL AND k.open = 0
                    THEN NOT (SELECT w.definition ? 'output' FROM warden.workflows w
                               WHERE w.tenant_id = k.tenant_id
                                 AND w.workflow_id = k.workflow_id
                                 AND w.version = k.workflow_version)
                    ELSE false END AS ends,
               k.items OR k.running = 0
               OR (k.dependents > 0
                   AND EXISTS (SELECT 1 FROM warden.steps s
                                WHERE s.tenant_id = k.tenant_id AND s.run_id = k.run_id
                                  AND s.status = 'pending' AND s.depends_on && k.step_ids
                                  AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                                   WHERE d.tenant_id = s.tenant_id
                                                     AND d.run_id = s.run_id
                                                     AND d.step_id = ANY (s.depends_on)
                                                     AND d.status IN ('pending', 'running',
                                                                      'waiting')))) AS due
          FROM counted k
    )
    SELECT coalesce(array_agg(j.tenant_id), '{}'), coalesce(array_agg(j.run_id), '{}'),
           coalesce(array_agg(j.ends), '{}'),
           coalesce(array_agg(CASE WHEN j.ends THEN (
               -- the sink steps' outputs (dag.sink_steps: steps nothing depends on)
               SELECT coalesce(jsonb_object_agg(s.step_id, s.output), '{}')
                 FROM warden.steps s
                WHERE s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                  AND s.status = 'succeeded'
                  AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                   WHERE d.tenant_id = s.tenant_id AND d.run_id = s.run_id
                                     AND s.step_id = ANY (d.depends_on))) END), '{}')
      INTO v_tenants, v_runs, v_ends, v_outputs
      FROM judged j
     WHERE j.ends OR j.due;

    -- every run's events in one INSERT, a run that ends here closing with run.succeeded
    -- (unscoped: a worker session carries no tenant scope, and the leases were checked
    -- above)
    PERFORM warden.append_events_for_runs_unscoped(coalesce((
        SELECT jsonb_agg(jsonb_build_object('tenant_id', g.tenant_id, 'run_id', g.run_id,
                                            'events', g.events))
          FROM (SELECT c.tenant_id, c.run_id,
                       jsonb_agg(c.event ORDER BY c.stage, c.key, c.n) AS events
                  FROM (SELECT j.tenant_id, j.run_id, 0 AS stage, j.job_id AS key, 0 AS n,
                               jsonb_build_object('kind', 'job.succeeded',
                                                  'step_id', j.step_id, 'job_id', j.job_id,
                                                  'attempt', j.attempt, 'actor', j.worker,
                                                  'data', '{}'::jsonb) AS event
                          FROM unnest(v_done) j
                        UNION ALL
                        -- each dispatched step's three events, in order, step by step
                        SELECT d.value->>'tenant_id', (d.value->>'run_id')::uuid, 1,
                               d.value->>'step_id', e.n, e.event
                          FROM jsonb_array_elements(v_dispatched) d
                         CROSS JOIN LATERAL jsonb_array_elements(d.value->'events')
                               WITH ORDINALITY AS e(event, n)
                        UNION ALL
                        -- the scheduler's words (engine/scheduling/scheduler.py, _settle):
                        -- this is its rule, applied in the completing transaction
                        SELECT x.tenant_id, x.run_id, 2, NULL, 0,
                               jsonb_build_object('kind', 'run.succeeded', 'actor', 'scheduler',
                                                  'data', jsonb_build_object('status',
                                                                             'succeeded'))
                          FROM unnest(v_tenants, v_runs, v_ends) AS x(tenant_id, run_id, ends)
                         WHERE x.ends) c
                 GROUP BY c.tenant_id, c.run_id) g), '[]'));

    UPDATE warden.runs u
       SET needs_scheduling = u.needs_scheduling OR NOT x.ends,
           status = CASE WHEN x.ends THEN 'succeeded' ELSE u.status END,
           output = CASE WHEN x.ends THEN x.output ELSE u.output END,
           finished_at = CASE WHEN x.ends THEN warden.now() ELSE u.finished_at END,
           end_unobserved = u.end_unobserved OR x.ends
      FROM unnest(v_tenants, v_runs, v_ends, v_outputs) AS x(tenant_id, run_id, ends, output)
     WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id
       AND (x.ends OR NOT u.needs_scheduling);
    -- one NOTIFY for the batch when it flagged a run; also for a run flagged already, as
    -- before: its scheduler may have passed it by while this transaction held it locked.
    -- An end wakes nobody: the observer polls for ends.
    IF false = ANY (v_ends) THEN
        PERFORM pg_notify('warden_scheduler', '');
    END IF;
    -- the workers of each topic that got a job here (as engine/store/jobs.py notify_topics)
    PERFORM pg_notify('warden_jobs', t) FROM unnest(v_topics) AS t;

    -- the job row is looked up again (by index, one per job) only for the fenced ones
    RETURN QUERY
        SELECT i.job_id,
               CASE WHEN c.job_id IS NOT NULL THEN 'completed'
                    ELSE warden.fence_outcome(i.job_id) END
          FROM unnest(complete_jobs.job_ids) AS i(job_id)
          LEFT JOIN unnest(v_done) c ON c.job_id = i.job_id;
END $$;

DROP FUNCTION warden.chain_events_for_runs(jsonb);
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
