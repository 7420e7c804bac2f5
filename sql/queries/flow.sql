-- name: step_begin_wait :one
-- A pending sleep or wait_event step begins waiting: until wake_at (its fire time, or a
-- wait's timeout), for the event await_event with key await_key. Guarded by pending.
UPDATE warden.steps
   SET status = 'waiting', started_at = coalesce(started_at, warden.now()),
       wake_at = %(wake_at)s, await_event = %(await_event)s, await_key = %(await_key)s
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND status = 'pending'
RETURNING *;

-- name: event_try_lock :one
-- The scheduler's side of warden.event_lock: tried, never waited for, because the
-- scheduler holds run locks that warden.send_event may be waiting for.
SELECT pg_try_advisory_xact_lock(warden.event_lock(%(tenant_id)s, %(name)s, %(key)s));

-- name: event_match :one
-- The event a wait that began at %(since)s takes: the oldest of its name and key still
-- kept when the wait began, or received since (expires_at > since covers both).
-- Uses events_by_key.
SELECT * FROM warden.events
 WHERE tenant_id = %(tenant_id)s AND name = %(name)s AND key = %(key)s
   AND expires_at > %(since)s
 ORDER BY received_at, event_id
 LIMIT 1;

-- name: event_send :one
-- warden.send_event for the API and the CLI (SQL clients call it directly).
SELECT * FROM warden.send_event(%(tenant_id)s, %(event_id)s, %(name)s, %(key)s,
                                %(data)s, %(sent_by)s, %(keep_ms)s);

-- name: event_get :one
SELECT * FROM warden.events WHERE tenant_id = %(tenant_id)s AND event_id = %(event_id)s;

-- name: steps_wake_due :many
-- The reaper: flags the runs of waiting steps whose wake_at has passed (a timer to fire,
-- a wait to time out), so the scheduler moves them. Uses steps_wake; SKIP LOCKED, since a
-- run that is locked is being scheduled right now (and a run already flagged is left be).
WITH due AS (
    SELECT DISTINCT s.tenant_id, s.run_id FROM warden.steps s
     WHERE s.status = 'waiting' AND s.wake_at <= warden.now()
     LIMIT %(limit)s
), locked AS (
    SELECT r.tenant_id, r.run_id FROM warden.runs r
      JOIN due ON due.tenant_id = r.tenant_id AND due.run_id = r.run_id
     WHERE NOT r.needs_scheduling
     ORDER BY r.tenant_id, r.run_id
       FOR NO KEY UPDATE OF r SKIP LOCKED
)
UPDATE warden.runs r SET needs_scheduling = true
  FROM locked
 WHERE r.tenant_id = locked.tenant_id AND r.run_id = locked.run_id
RETURNING r.tenant_id, r.run_id;

-- name: steps_next_wake :one
-- Seconds from now (database time) to the earliest fire time or timeout still ahead, or
-- NULL: the reaper waits for it when it comes before its next pass. Uses steps_wake.
SELECT extract(epoch FROM min(wake_at) - warden.now())::float8
  FROM warden.steps WHERE status = 'waiting' AND wake_at > warden.now();

-- name: timeline_flow_events :many
-- What a run document shows of its control flow: conditions evaluated, waits matched.
SELECT step_id, kind::text AS kind, data FROM warden.timeline
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   AND kind IN ('step.condition', 'wait.matched')
 ORDER BY seq;
