-- name: items_insert :exec
-- Creates every item of a for_each step in one statement (a 1,000-item step is one
-- statement, not 1,000), from a JSON array of {item_index, item}.
INSERT INTO warden.step_items (tenant_id, run_id, step_id, item_index, item, max_attempts)
SELECT %(tenant_id)s, %(run_id)s, %(step_id)s, x.item_index, x.item, %(max_attempts)s
  FROM jsonb_to_recordset(%(items)s) AS x(item_index integer, item jsonb);

-- name: items_of_running_steps :many
-- The items of the for_each steps of these runs that are still running: a scheduler
-- pass reads its whole batch's at once.
SELECT i.* FROM warden.step_items i
  JOIN unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[]) AS k(tenant_id, run_id)
    ON i.tenant_id = k.tenant_id AND i.run_id = k.run_id
  JOIN warden.steps s ON s.tenant_id = i.tenant_id AND s.run_id = i.run_id
   AND s.step_id = i.step_id AND s.status = 'running'
 ORDER BY i.tenant_id, i.run_id, i.step_id, i.item_index;

-- name: items_of_run :many
-- Every item of a run's for_each steps, in order (the run document shows them).
SELECT * FROM warden.step_items
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
 ORDER BY step_id, item_index;

-- name: items_start_attempts :exec
-- A pass's dispatched item attempts, set-based: each item running with one more attempt,
-- guarded by the attempt count the pass saw (the caller compares the row count), and the
-- policy's max_attempts applied where it set one.
UPDATE warden.step_items i
   SET status = 'running', attempts = i.attempts + 1, retry_at = NULL,
       started_at = coalesce(i.started_at, warden.now()),
       max_attempts = coalesce(x.max_attempts, i.max_attempts)
  FROM jsonb_to_recordset(%(starts)s) AS x(
       tenant_id text, run_id uuid, step_id text, item_index integer, attempts integer,
       max_attempts integer)
 WHERE i.tenant_id = x.tenant_id AND i.run_id = x.run_id AND i.step_id = x.step_id
   AND i.item_index = x.item_index AND i.attempts = x.attempts
   AND i.status IN ('pending', 'running');

-- name: item_transition :one
-- Moves one item from the status the caller saw; final statuses stamp finished_at.
UPDATE warden.step_items
   SET status = %(to_status)s,
       attempts = attempts + %(attempted)s::integer,
       started_at = coalesce(started_at, warden.now()),
       finished_at = CASE WHEN %(final)s THEN warden.now() END,
       output = coalesce(%(output)s, output),
       error = coalesce(%(error)s, error),
       retry_at = NULL
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND item_index = %(item_index)s AND status = %(from_status)s
RETURNING *;

-- name: items_end_open :many
-- Ends the unfinished items of a run (step_id NULL) or of one step: those never started
-- take `unstarted`, the others `started`. The caller holds the run.
UPDATE warden.step_items
   SET status = CASE WHEN status = 'pending' THEN %(unstarted)s::warden.step_status
                     ELSE %(started)s::warden.step_status END,
       finished_at = warden.now(), retry_at = NULL,
       error = coalesce(error, %(error)s)
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   AND (%(step_id)s::text IS NULL OR step_id = %(step_id)s::text)
   AND finished_at IS NULL
RETURNING *;

-- name: item_transition_by_key :one
-- Moves one item from the status the caller names (an approval decided or expired).
UPDATE warden.step_items
   SET status = %(to_status)s,
       finished_at = CASE WHEN %(final)s THEN warden.now() END,
       error = coalesce(%(error)s, error)
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND item_index = %(item_index)s AND status = %(from_status)s
RETURNING *;
