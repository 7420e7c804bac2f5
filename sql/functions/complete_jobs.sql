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
    v_done  warden.jobs[];
    v_due   integer;
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

    -- wake_run, set-based, and only where this completion can change what the scheduler
    -- decides (engine/definitions/dag.py): a for_each item ended (its step's outcome needs
    -- every item); a pending step that depends on a completed one may now be ready or
    -- skipped (every trigger waits for all its dependencies to be final); or no step of
    -- the run is running any more (the run settles, or waits on an approval or a timer).
    -- Otherwise (the other branches of a fan-out still running) a pass would read the
    -- whole run and find nothing to do. This needs no lock of its own: the append
    -- above locked the runs, and every writer of a step's status holds its run's lock, so
    -- of two completions racing for a run's last running steps, the second one in reads
    -- (statement snapshot, READ COMMITTED) the first one's committed step and wakes the run.
    WITH ended AS (
        SELECT c.tenant_id, c.run_id, array_agg(c.step_id) AS step_ids,
               bool_or(c.item_index IS NOT NULL) AS items
          FROM unnest(v_done) c
         GROUP BY c.tenant_id, c.run_id
    ), due AS (
        SELECT e.tenant_id, e.run_id FROM ended e
         WHERE e.items
            OR NOT EXISTS (SELECT 1 FROM warden.steps s
                            WHERE s.tenant_id = e.tenant_id AND s.run_id = e.run_id
                              AND s.status = 'running')
            OR EXISTS (SELECT 1 FROM warden.steps s
                        WHERE s.tenant_id = e.tenant_id AND s.run_id = e.run_id
                          AND s.status = 'pending' AND s.depends_on && e.step_ids
                          AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                           WHERE d.tenant_id = s.tenant_id
                                             AND d.run_id = s.run_id
                                             AND d.step_id = ANY (s.depends_on)
                                             AND d.status IN ('pending', 'running', 'waiting')))
    ), woken AS (
        UPDATE warden.runs u SET needs_scheduling = true
          FROM due c
         WHERE u.tenant_id = c.tenant_id AND u.run_id = c.run_id AND NOT u.needs_scheduling
    )
    SELECT count(*) INTO v_due FROM due;
    -- one NOTIFY for the batch; also for a run flagged already, as before: its scheduler
    -- may have passed it by while this transaction held it locked
    IF v_due > 0 THEN
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
