-- name: reconcile_runs_past_deadline :many
-- Open runs whose run-level deadline (definition timeout_ms) has passed.
-- Uses index runs_open_deadline.
SELECT * FROM warden.runs
 WHERE deadline_at <= warden.now() AND finished_at IS NULL
 ORDER BY deadline_at
 LIMIT %(limit)s;

-- name: reconcile_flag_stuck_runs :many
-- Open runs that should move but are not flagged for the scheduler: every step is final
-- (the run should end), or a pending step has all its dependencies succeeded (it should
-- have been dispatched). Flags them and says why. SKIP LOCKED: a run a scheduler or
-- another reconciler holds is being handled right now. The grace period keeps us from
-- racing a transaction that is about to flag the run itself.
-- A sweep (docs/design.md#sweeps): the open runs of each tenant, found by a loose scan
-- of the tenants and runs_by_status per open status (the statuses that
-- runs_finished_iff_final leaves open), each probed through its own steps (LATERAL,
-- LIMIT 1). As ORed EXISTS the checks were planned as hashes of the whole steps table, a
-- sequential scan of every step ever run, each pass (bench/README.md, session 11); a test
-- checks the plan.
WITH RECURSIVE tenant AS (
    (SELECT r.tenant_id FROM warden.runs r ORDER BY r.tenant_id LIMIT 1)
    UNION ALL
    SELECT n.tenant_id FROM tenant p CROSS JOIN LATERAL (
        SELECT r.tenant_id FROM warden.runs r WHERE r.tenant_id > p.tenant_id
         ORDER BY r.tenant_id LIMIT 1) AS n
), stuck AS (
    SELECT r.tenant_id, r.run_id,
           CASE WHEN open_step.run_id IS NULL THEN 'all steps final but the run is open'
                ELSE 'a step is ready but has no job or approval' END AS reason
      -- the tenants as one array: runs_by_status keyed on both columns, never a join
      -- a planner may turn into a walk of every tenant's runs
      FROM warden.runs r
      LEFT JOIN LATERAL (
          SELECT s.run_id FROM warden.steps s
           WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
             AND s.finished_at IS NULL
           LIMIT 1) AS open_step ON true
      LEFT JOIN LATERAL (
          -- the item and child checks are LATERAL too: as EXISTS, a planner may hash them
          -- from the whole table (PostgreSQL 17 did, for step_items)
          SELECT s.run_id FROM warden.steps s
            LEFT JOIN LATERAL (
                SELECT 1 AS x FROM warden.step_items i
                 WHERE i.tenant_id = s.tenant_id AND i.run_id = s.run_id
                   AND i.step_id = s.step_id
                 LIMIT 1) AS item ON s.status = 'running'
            LEFT JOIN LATERAL (
                SELECT 1 AS x FROM warden.step_items i
                 WHERE i.tenant_id = s.tenant_id AND i.run_id = s.run_id
                   AND i.step_id = s.step_id
                   AND i.status IN ('running', 'waiting') AND i.retry_at IS NULL
                 LIMIT 1) AS in_flight ON s.status = 'running'
            LEFT JOIN LATERAL (
                SELECT 1 AS x FROM warden.runs c
                 WHERE c.tenant_id = s.tenant_id AND c.parent_run_id = s.run_id
                   AND c.parent_step_id = s.step_id AND c.parent_attempt = s.attempts
                   AND c.finished_at IS NOT NULL
                 LIMIT 1) AS child_ended ON s.status = 'running' AND s.type = 'workflow'
           WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
             AND s.finished_at IS NULL
             AND (   -- a pending step whose dependencies all succeeded (never hashed:
                     -- its correlation is no plain equality)
                     (s.status = 'pending'
                      AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                       WHERE d.tenant_id = s.tenant_id
                                         AND d.run_id = s.run_id
                                         AND d.step_id = ANY (s.depends_on)
                                         AND d.status <> 'succeeded'))
                     -- a for_each step with no item in flight: the scheduler dispatches
                     -- the next ones or ends the step (engine/scheduling/fanout.py)
                  OR (s.status = 'running' AND item.x IS NOT NULL AND in_flight.x IS NULL)
                     -- a workflow step whose child run has ended
                  OR child_ended.x IS NOT NULL)
           LIMIT 1) AS ready ON true
     WHERE r.tenant_id = ANY (ARRAY(SELECT t.tenant_id FROM tenant t))
       AND r.status IN ('pending', 'running', 'waiting')
       AND r.finished_at IS NULL AND NOT r.needs_scheduling
       AND r.created_at < warden.now() - %(grace)s::interval
       AND (open_step.run_id IS NULL OR ready.run_id IS NOT NULL)
     ORDER BY r.tenant_id, r.run_id
     LIMIT %(limit)s
       FOR NO KEY UPDATE OF r SKIP LOCKED
)
UPDATE warden.runs r SET needs_scheduling = true
  FROM stuck
 WHERE r.tenant_id = stuck.tenant_id AND r.run_id = stuck.run_id
RETURNING r.tenant_id, r.run_id, stuck.reason;

-- name: reconcile_stalled_steps :many
-- Running steps with no unfinished job and no retry scheduled: nothing will ever move
-- them. Locks their runs first (SKIP LOCKED, lock order runs -> steps) and returns them.
-- A sweep over the open runs, found and probed as above: a filter over all steps was a
-- sequential scan of every step ever run, each pass.
WITH RECURSIVE tenant AS (
    (SELECT r.tenant_id FROM warden.runs r ORDER BY r.tenant_id LIMIT 1)
    UNION ALL
    SELECT n.tenant_id FROM tenant p CROSS JOIN LATERAL (
        SELECT r.tenant_id FROM warden.runs r WHERE r.tenant_id > p.tenant_id
         ORDER BY r.tenant_id LIMIT 1) AS n
)
SELECT s.* FROM warden.runs r
  JOIN LATERAL (
      -- each check LATERAL, LIMIT 1: as NOT EXISTS they are anti-joins a planner may hash
      -- from the whole table
      SELECT s.* FROM warden.steps s
        -- a for_each step's items move it (reconcile_flag_stuck_runs), not a step retry
        LEFT JOIN LATERAL (
            SELECT 1 AS x FROM warden.step_items i
             WHERE i.tenant_id = s.tenant_id AND i.run_id = s.run_id
               AND i.step_id = s.step_id
             LIMIT 1) AS item ON true
        -- an attempt in flight, one that succeeded, or one that ended within the grace
        LEFT JOIN LATERAL (
            SELECT 1 AS x FROM warden.jobs j
             WHERE j.tenant_id = s.tenant_id AND j.run_id = s.run_id
               AND j.step_id = s.step_id
               AND (j.finished_at IS NULL OR j.status = 'succeeded'
                    OR j.finished_at > warden.now() - %(grace)s::interval)
             LIMIT 1) AS live ON true
       WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
         AND s.status = 'running' AND s.retry_at IS NULL AND s.type = 'job'
         AND item.x IS NULL AND live.x IS NULL
  ) AS s ON true
 WHERE r.tenant_id = ANY (ARRAY(SELECT t.tenant_id FROM tenant t))
   AND r.status IN ('pending', 'running', 'waiting')
   AND r.finished_at IS NULL
 ORDER BY s.tenant_id, s.run_id, s.step_id
 LIMIT %(limit)s
   FOR NO KEY UPDATE OF r SKIP LOCKED;

-- name: reconcile_retry_step :one
-- Schedules the next attempt of a stalled step now.
UPDATE warden.steps SET retry_at = warden.now()
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND status = 'running' AND retry_at IS NULL
RETURNING *;

-- name: reconcile_unclaimed_jobs :many
-- Claimable jobs nobody claimed within the dispatch timeout, not reported yet: marks
-- them reported (once) and returns them, so their topics are announced again.
-- %(lookback)s: only jobs that passed the timeout within it (NULL: all), a range of
-- jobs_unclaimed_by_available (docs/design.md#lookbacks).
WITH due AS (
    SELECT tenant_id, job_id FROM warden.jobs
     WHERE status = 'pending' AND unclaimed_reported_at IS NULL
       AND available_at < warden.now() - %(timeout)s::interval
       AND available_at >= coalesce(
               warden.now() - %(timeout)s::interval - %(lookback)s::interval,
               '-infinity')
     ORDER BY available_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE warden.jobs j SET unclaimed_reported_at = warden.now()
  FROM due
 WHERE j.tenant_id = due.tenant_id AND j.job_id = due.job_id
RETURNING j.*;
