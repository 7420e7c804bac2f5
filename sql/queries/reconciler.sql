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
WITH stuck AS (
    SELECT r.tenant_id, r.run_id,
           CASE WHEN NOT EXISTS (
                    SELECT 1 FROM warden.steps s
                     WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
                       AND s.finished_at IS NULL)
                THEN 'all steps final but the run is open'
                ELSE 'a step is ready but has no job or approval' END AS reason
      FROM warden.runs r
     WHERE r.finished_at IS NULL AND NOT r.needs_scheduling
       AND r.created_at < warden.now() - %(grace)s::interval
       AND (NOT EXISTS (SELECT 1 FROM warden.steps s
                         WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
                           AND s.finished_at IS NULL)
            OR EXISTS (SELECT 1 FROM warden.steps s
                        WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
                          AND s.status = 'pending'
                          AND NOT EXISTS (SELECT 1 FROM warden.steps d
                                           WHERE d.tenant_id = s.tenant_id
                                             AND d.run_id = s.run_id
                                             AND d.step_id = ANY (s.depends_on)
                                             AND d.status <> 'succeeded'))
            -- a for_each step with no item in flight: the scheduler dispatches the next
            -- ones or ends the step (engine/scheduling/fanout.py)
            OR EXISTS (SELECT 1 FROM warden.steps s
                        WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
                          AND s.status = 'running'
                          AND EXISTS (SELECT 1 FROM warden.step_items i
                                       WHERE i.tenant_id = s.tenant_id
                                         AND i.run_id = s.run_id AND i.step_id = s.step_id)
                          AND NOT EXISTS (SELECT 1 FROM warden.step_items i
                                           WHERE i.tenant_id = s.tenant_id
                                             AND i.run_id = s.run_id
                                             AND i.step_id = s.step_id
                                             AND i.status IN ('running', 'waiting')
                                             AND i.retry_at IS NULL))
            -- a workflow step whose child run has ended
            OR EXISTS (SELECT 1 FROM warden.steps s
                         JOIN warden.runs c ON c.tenant_id = s.tenant_id
                          AND c.parent_run_id = s.run_id AND c.parent_step_id = s.step_id
                          AND c.parent_attempt = s.attempts
                        WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id
                          AND s.status = 'running' AND s.type = 'workflow'
                          AND c.finished_at IS NOT NULL))
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
SELECT s.* FROM warden.steps s
  JOIN warden.runs r ON r.tenant_id = s.tenant_id AND r.run_id = s.run_id
 WHERE s.status = 'running' AND s.retry_at IS NULL AND s.type = 'job'
   AND r.finished_at IS NULL
   -- a for_each step's items move it (reconcile_flag_stuck_runs), not a step retry
   AND NOT EXISTS (SELECT 1 FROM warden.step_items i
                    WHERE i.tenant_id = s.tenant_id AND i.run_id = s.run_id
                      AND i.step_id = s.step_id)
   AND NOT EXISTS (SELECT 1 FROM warden.jobs j
                    WHERE j.tenant_id = s.tenant_id AND j.run_id = s.run_id
                      AND j.step_id = s.step_id
                      AND (j.finished_at IS NULL OR j.status = 'succeeded'))
   AND NOT EXISTS (SELECT 1 FROM warden.jobs j
                    WHERE j.tenant_id = s.tenant_id AND j.run_id = s.run_id
                      AND j.step_id = s.step_id
                      AND j.finished_at > warden.now() - %(grace)s::interval)
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
WITH due AS (
    SELECT tenant_id, job_id FROM warden.jobs
     WHERE status = 'pending' AND unclaimed_reported_at IS NULL
       AND available_at < warden.now() - %(timeout)s::interval
     ORDER BY available_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE warden.jobs j SET unclaimed_reported_at = warden.now()
  FROM due
 WHERE j.tenant_id = due.tenant_id AND j.job_id = due.job_id
RETURNING j.*;
