-- name: steps_insert :exec
-- Creates every step of a new run in one statement, from a JSON array of step rows.
INSERT INTO warden.steps
    (tenant_id, run_id, step_id, type, depends_on, topic, max_attempts, backoff_ms,
     max_backoff_ms, multiplier, jitter, timeout_ms, priority)
SELECT %(tenant_id)s, %(run_id)s, s.step_id, s.type, s.depends_on, s.topic, s.max_attempts,
       s.backoff_ms, s.max_backoff_ms, s.multiplier, s.jitter, s.timeout_ms, s.priority
  FROM jsonb_to_recordset(%(steps)s) AS s(
       step_id text, type warden.step_type, depends_on text[], topic text, max_attempts int,
       backoff_ms int, max_backoff_ms int, multiplier float8, jitter float8, timeout_ms int,
       priority smallint);

-- name: steps_of_run :many
-- All steps of a run (the caller orders them by the definition's topological order).
SELECT * FROM warden.steps WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s;

-- name: step_transition :one
-- Moves a step from the status the caller saw; final statuses stamp finished_at.
UPDATE warden.steps
   SET status = %(to_status)s,
       started_at = coalesce(started_at, warden.now()),
       finished_at = CASE WHEN %(final)s THEN warden.now() END,
       output = coalesce(%(output)s, output),
       error = coalesce(%(error)s, error),
       retry_at = NULL
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND status = %(from_status)s
RETURNING *;

-- name: step_start_attempt :one
-- Counts a new attempt of a job step and marks it running; guarded by the attempt count
-- the caller saw, so two schedulers can never dispatch the same attempt.
UPDATE warden.steps
   SET status = 'running', attempts = attempts + 1, retry_at = NULL,
       started_at = coalesce(started_at, warden.now())
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND attempts = %(attempts)s AND status IN ('pending', 'running')
RETURNING *;

-- name: step_limit_attempts :one
-- Applies a policy's max_attempts constraint: it overrides the definition's retries.
UPDATE warden.steps SET max_attempts = %(max_attempts)s
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
RETURNING *;

-- name: steps_of_runs :many
-- All steps of several runs (a scheduler pass reads its whole batch at once).
SELECT s.* FROM warden.steps s
  JOIN unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[]) AS k(tenant_id, run_id)
    ON s.tenant_id = k.tenant_id AND s.run_id = k.run_id;

-- name: steps_start_attempts :exec
-- step_start_attempt for a pass's batch of dispatched attempts, with the policy's
-- max_attempts applied where it set one; each guarded by the attempt count the pass saw
-- (the caller compares the row count). Parallel arrays, for the reason given at
-- runs_transition_many: an index nested loop over steps_pkey.
UPDATE warden.steps s
   SET status = 'running', attempts = s.attempts + 1, retry_at = NULL,
       started_at = coalesce(s.started_at, warden.now()),
       max_attempts = coalesce(x.max_attempts, s.max_attempts)
  FROM unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[], %(step_ids)s::text[],
              %(attempts)s::integer[], %(max_attempts)s::integer[])
       AS x(tenant_id, run_id, step_id, attempts, max_attempts)
 WHERE s.tenant_id = x.tenant_id AND s.run_id = x.run_id AND s.step_id = x.step_id
   AND s.attempts = x.attempts AND s.status IN ('pending', 'running');

-- name: steps_insert_for_runs :many
-- Creates every step of several new runs of one workflow version in one statement: each
-- run gets the same step rows (a JSON array, as steps_insert takes). Returns them: a
-- start that dispatches at once passes them to its scheduler pass.
INSERT INTO warden.steps
    (tenant_id, run_id, step_id, type, depends_on, topic, max_attempts, backoff_ms,
     max_backoff_ms, multiplier, jitter, timeout_ms, priority)
SELECT %(tenant_id)s, r.run_id, s.step_id, s.type, s.depends_on, s.topic, s.max_attempts,
       s.backoff_ms, s.max_backoff_ms, s.multiplier, s.jitter, s.timeout_ms, s.priority
  FROM unnest(%(run_ids)s::uuid[]) AS r(run_id)
 CROSS JOIN jsonb_to_recordset(%(steps)s) AS s(
       step_id text, type warden.step_type, depends_on text[], topic text, max_attempts int,
       backoff_ms int, max_backoff_ms int, multiplier float8, jitter float8, timeout_ms int,
       priority smallint)
 ORDER BY r.run_id, s.step_id
RETURNING *;
