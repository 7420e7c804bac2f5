"""The fence reads the time once per batch completion: warden.lease_held_at(job, token,
at) is the fence, warden.lease_held(job, token) is it at warden.now(), and
warden.complete_jobs passes the time it read at its start. Inlined, lease_held called
warden.now() (a PL/pgSQL call) for every row of the batch.

Revision ID: 0039_fence_at_a_time
Revises: 0038_unclaimed_lookback
Create Date: 2026-12-07

Frozen. The functions are verbatim copies of sql/functions/lease_held_at.sql,
lease_held.sql and complete_jobs.sql as of this change; the downgrade restores the
previous bodies of the last two (migrations 0024's and 0036's) and drops the first.
Same fence, rows, outcomes, locks and events: now() is the transaction's, the same
value at the start of the call and at each row.
"""

from alembic import op

revision = "0039_fence_at_a_time"
down_revision = "0038_unclaimed_lookback"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
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
-- The fence at the database's time now: warden.lease_held_at(j, presented, warden.now()),
-- which says what the fence is. The writes of one job call this; complete_jobs, which
-- holds the time already, calls lease_held_at. Inlined like it.
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT warden.lease_held_at(j, presented, warden.now())
$$;
-- Completes a worker's batch of jobs in one statement (one commit for all of them: with
-- durability on, a commit per job capped a worker at a few hundred jobs/s). Each job is
-- fenced like every worker write (warden.lease_held_at, at the call's time read once),
-- and gets an outcome row instead of an error, so one stale lease does not throw the
-- rest of the batch away: 'completed', or why the write was fenced
-- (warden.fence_outcome: 'lease_lost', 'cancelled', 'not_found').
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
    -- each job id's position in the arguments (job_id -> index), for its token and result
    v_pos        jsonb;
    v_dispatched jsonb := '[]';
    v_topics     text[] := '{}';
    -- the transaction's time on the database clock, read once (as start_planned_run's):
    -- warden.now() is a SQL function the planner cannot inline, and calling it per row
    -- of each statement was five calls per job (~4 us each, bench/README.md)
    v_now        timestamptz := warden.now();
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
    -- Each row finds its token and result by its position in the arguments (a jsonb
    -- object's keys are sorted, so a lookup is a binary search), not by a join with
    -- unnest(): on a generic plan, where the fenced rows are estimated at one, the join
    -- was a nested loop that walked the whole input for every job, n^2 for a batch of n
    -- (1.7 of a 32-job call's 4 ms; ~0.4 s for the completer's largest batch, 500;
    -- bench/README.md, session 17). job_id = ANY(...) lets jobs_by_job_id find the rows.
    SELECT jsonb_object_agg(u.job_id, u.n) INTO v_pos
      FROM unnest(complete_jobs.job_ids) WITH ORDINALITY AS u(job_id, n)
     WHERE u.job_id IS NOT NULL;  -- no key; such an entry is 'not_found', as before
    WITH done AS (
        UPDATE warden.jobs t
           SET status = 'succeeded',
               result = complete_jobs.results[(v_pos ->> t.job_id)::integer],
               finished_at = v_now
         WHERE t.job_id = ANY (complete_jobs.job_ids)
           AND warden.lease_held_at(
                   t, complete_jobs.lease_tokens[(v_pos ->> t.job_id)::integer], v_now)
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
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = v_now
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running' AND c.item_index IS NULL;
    -- a for_each item's job ends its item; the scheduler then decides the step's outcome
    -- (engine/scheduling/fanout.py), which needs every item
    UPDATE warden.step_items s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = v_now,
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
                  AND (u.deadline_at IS NULL OR u.deadline_at > v_now)
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
                   started_at = coalesce(s.started_at, v_now)
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
                   r.priority, r.input, r.upstream, '{}', r.timeout_ms, v_now,
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
                                              'topic', r.topic, 'available_at', v_now,
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
    --   not flagged: its end goes to warden.run_ends, where a serve's observer records it
    --   (metrics, traces) in batches, with no scheduler pass and no wake-up
    --   (runs_observe_ends);
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
    ), judged AS MATERIALIZED (
        -- MATERIALIZED: each run judged once. Inlined, `ends` was copied into the three
        -- places below that read it, and each copy read the workflow's definition again.
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
               -- the sink steps' outputs (dag.sink_steps: steps nothing depends on).
               -- What the run's steps depend on is gathered in one walk; a NOT EXISTS
               -- per step walked the run's steps once for each of them (12,000 index
               -- entries to end a 100-step fan-out, bench/README.md, session 16).
               SELECT coalesce(jsonb_object_agg(s.step_id, s.output), '{}')
                 FROM warden.steps s
                WHERE s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                  AND s.status = 'succeeded'
                  AND s.step_id <> ALL (ARRAY(
                      SELECT dep FROM warden.steps d
                       CROSS JOIN LATERAL unnest(d.depends_on) AS dep
                       WHERE d.tenant_id = j.tenant_id AND d.run_id = j.run_id))) END), '{}')
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
           finished_at = CASE WHEN x.ends THEN v_now ELSE u.finished_at END
      FROM (SELECT h.tenant_id, h.run_id, h.seq, h.hash, j.ends, j.output
              FROM unnest(h_tenants, h_runs, h_seqs, h_hashes) AS h(tenant_id, run_id, seq, hash)
              LEFT JOIN unnest(v_tenants, v_runs, v_ends, v_outputs)
                        AS j(tenant_id, run_id, ends, output)
                ON j.tenant_id = h.tenant_id AND j.run_id = h.run_id
            OFFSET 0) x
     WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    -- the ends, for a serve's observer (warden.run_ends, runs_observe_ends)
    IF true = ANY (v_ends) THEN
        INSERT INTO warden.run_ends (tenant_id, run_id, finished_at)
        SELECT x.tenant_id, x.run_id, v_now
          FROM unnest(v_tenants, v_runs, v_ends) AS x(tenant_id, run_id, ends)
         WHERE x.ends;
    END IF;
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
    -- each job id's position in the arguments (job_id -> index), for its token and result
    v_pos        jsonb;
    v_dispatched jsonb := '[]';
    v_topics     text[] := '{}';
    -- the transaction's time on the database clock, read once (as start_planned_run's):
    -- warden.now() is a SQL function the planner cannot inline, and calling it per row
    -- of each statement was five calls per job (~4 us each, bench/README.md)
    v_now        timestamptz := warden.now();
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
    -- Each row finds its token and result by its position in the arguments (a jsonb
    -- object's keys are sorted, so a lookup is a binary search), not by a join with
    -- unnest(): on a generic plan, where the fenced rows are estimated at one, the join
    -- was a nested loop that walked the whole input for every job, n^2 for a batch of n
    -- (1.7 of a 32-job call's 4 ms; ~0.4 s for the completer's largest batch, 500;
    -- bench/README.md, session 17). job_id = ANY(...) lets jobs_by_job_id find the rows.
    SELECT jsonb_object_agg(u.job_id, u.n) INTO v_pos
      FROM unnest(complete_jobs.job_ids) WITH ORDINALITY AS u(job_id, n)
     WHERE u.job_id IS NOT NULL;  -- no key; such an entry is 'not_found', as before
    WITH done AS (
        UPDATE warden.jobs t
           SET status = 'succeeded',
               result = complete_jobs.results[(v_pos ->> t.job_id)::integer],
               finished_at = v_now
         WHERE t.job_id = ANY (complete_jobs.job_ids)
           AND warden.lease_held(
                   t, complete_jobs.lease_tokens[(v_pos ->> t.job_id)::integer])
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
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = v_now
      FROM unnest(v_done) c
     WHERE s.tenant_id = c.tenant_id AND s.run_id = c.run_id AND s.step_id = c.step_id
       AND s.status = 'running' AND c.item_index IS NULL;
    -- a for_each item's job ends its item; the scheduler then decides the step's outcome
    -- (engine/scheduling/fanout.py), which needs every item
    UPDATE warden.step_items s
       SET status = 'succeeded', output = c.result, error = NULL, finished_at = v_now,
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
                  AND (u.deadline_at IS NULL OR u.deadline_at > v_now)
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
                   started_at = coalesce(s.started_at, v_now)
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
                   r.priority, r.input, r.upstream, '{}', r.timeout_ms, v_now,
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
                                              'topic', r.topic, 'available_at', v_now,
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
    --   not flagged: its end goes to warden.run_ends, where a serve's observer records it
    --   (metrics, traces) in batches, with no scheduler pass and no wake-up
    --   (runs_observe_ends);
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
    ), judged AS MATERIALIZED (
        -- MATERIALIZED: each run judged once. Inlined, `ends` was copied into the three
        -- places below that read it, and each copy read the workflow's definition again.
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
               -- the sink steps' outputs (dag.sink_steps: steps nothing depends on).
               -- What the run's steps depend on is gathered in one walk; a NOT EXISTS
               -- per step walked the run's steps once for each of them (12,000 index
               -- entries to end a 100-step fan-out, bench/README.md, session 16).
               SELECT coalesce(jsonb_object_agg(s.step_id, s.output), '{}')
                 FROM warden.steps s
                WHERE s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                  AND s.status = 'succeeded'
                  AND s.step_id <> ALL (ARRAY(
                      SELECT dep FROM warden.steps d
                       CROSS JOIN LATERAL unnest(d.depends_on) AS dep
                       WHERE d.tenant_id = j.tenant_id AND d.run_id = j.run_id))) END), '{}')
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
           finished_at = CASE WHEN x.ends THEN v_now ELSE u.finished_at END
      FROM (SELECT h.tenant_id, h.run_id, h.seq, h.hash, j.ends, j.output
              FROM unnest(h_tenants, h_runs, h_seqs, h_hashes) AS h(tenant_id, run_id, seq, hash)
              LEFT JOIN unnest(v_tenants, v_runs, v_ends, v_outputs)
                        AS j(tenant_id, run_id, ends, output)
                ON j.tenant_id = h.tenant_id AND j.run_id = h.run_id
            OFFSET 0) x
     WHERE u.tenant_id = x.tenant_id AND u.run_id = x.run_id;
    -- the ends, for a serve's observer (warden.run_ends, runs_observe_ends)
    IF true = ANY (v_ends) THEN
        INSERT INTO warden.run_ends (tenant_id, run_id, finished_at)
        SELECT x.tenant_id, x.run_id, v_now
          FROM unnest(v_tenants, v_runs, v_ends) AS x(tenant_id, run_id, ends)
         WHERE x.ends;
    END IF;
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
-- THE fence: a worker's write to a job lands only while the worker still holds the job's
-- lease — the job is running, the token is the one this claim handed out, and the lease
-- has not expired, whether or not the reaper has seen it yet — and while its login role
-- is still granted the job's tenant and topic (warden.granted). Every worker write
-- (heartbeat_job, complete_job(s), fail_job, release_job) filters on this and nothing
-- else. A SQL function so the planner inlines it into each UPDATE's WHERE clause: the
-- job is still found by its index (jobs_by_job_id), the fence is evaluated on that row.
-- The status is compared as text so that the fence never implies the predicate of the
-- partial index jobs_running_lease: where it did, generic plans made while few jobs were
-- running walked that index (every running job) and filtered each row against the
-- batch, and a completion of 32 jobs cost per running job in the fleet (bench/README.md).
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT j.status::text = 'running' AND j.lease_token = presented
       AND j.lease_expires_at > warden.now() AND warden.granted(j.tenant_id, j.topic)
$$;
DROP FUNCTION warden.lease_held_at(warden.jobs, uuid, timestamptz);
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
