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
