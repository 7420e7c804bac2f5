-- name: schedules_sync :exec
-- A workflow's newest version declares these schedules (docs/workflows.md#schedules):
-- upsert each, keeping its paused state and tick history; a schedule whose cron or time
-- zone changed starts again from its next tick (next_tick NULL). Schedules the version no
-- longer declares become inactive. Only for the newest version: the caller checks.
WITH declared AS (
    SELECT * FROM jsonb_to_recordset(%(schedules)s) AS x(
        name text, cron text, timezone text, input jsonb, overlap text, catch_up text)
), upserted AS (
    INSERT INTO warden.schedules AS s
        (tenant_id, workflow_id, name, workflow_version, cron, timezone, input, overlap,
         catch_up)
    SELECT %(tenant_id)s, %(workflow_id)s, d.name, %(version)s, d.cron, d.timezone, d.input,
           d.overlap, d.catch_up
      FROM declared d
    ON CONFLICT (tenant_id, workflow_id, name) DO UPDATE
       SET workflow_version = excluded.workflow_version, input = excluded.input,
           overlap = excluded.overlap, catch_up = excluded.catch_up, active = true,
           next_tick = CASE WHEN (s.cron, s.timezone) = (excluded.cron, excluded.timezone)
                                 AND s.active
                            THEN s.next_tick END,
           cron = excluded.cron, timezone = excluded.timezone, updated_at = now()
    RETURNING s.name
)
UPDATE warden.schedules s SET active = false, updated_at = now()
 WHERE s.tenant_id = %(tenant_id)s AND s.workflow_id = %(workflow_id)s AND s.active
   AND s.name NOT IN (SELECT d.name FROM declared d);

-- name: schedules_lock_due :many
-- Due schedules of every tenant (the cron loop acts across tenants), locked for this
-- pass. SKIP LOCKED: several serve processes take disjoint schedules; one another serve
-- is handling now is due again for nobody once its next_tick moves on. A NULL next_tick
-- (new, or changed) is due at once so the loop can set it. Uses schedules_due.
SELECT * FROM warden.schedules s
 WHERE s.active AND NOT s.paused
   AND (s.next_tick IS NULL OR s.next_tick <= warden.now())
 ORDER BY s.next_tick NULLS FIRST
 LIMIT %(limit)s
   FOR UPDATE SKIP LOCKED;

-- name: schedule_advance :exec
-- The locked schedule's next unhandled tick, and the last tick it handled.
UPDATE warden.schedules
   SET next_tick = %(next_tick)s, last_tick = coalesce(%(last_tick)s, last_tick)
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s AND name = %(name)s;

-- name: schedule_tick_record :one
-- A handled tick; the primary key makes it once per (tenant, workflow, schedule, tick).
-- No row back: it was recorded before (another serve, or this one before a restart).
INSERT INTO warden.schedule_ticks (tenant_id, workflow_id, schedule_name, tick, outcome,
                                   run_id)
VALUES (%(tenant_id)s, %(workflow_id)s, %(name)s, %(tick)s, %(outcome)s, %(run_id)s)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: schedule_open_runs :many
-- The schedule's runs that have not finished (overlap: skip, cancel_previous).
SELECT t.run_id FROM warden.schedule_ticks t
  JOIN warden.runs r ON r.tenant_id = t.tenant_id AND r.run_id = t.run_id
 WHERE t.tenant_id = %(tenant_id)s AND t.workflow_id = %(workflow_id)s
   AND t.schedule_name = %(name)s AND t.run_id IS NOT NULL AND r.finished_at IS NULL
 ORDER BY t.tick;

-- name: schedules_list :many
-- A tenant's schedules (every tenant's when tenant_id is NULL), with their last run.
SELECT s.*, t.run_id AS last_run_id, t.outcome AS last_outcome
  FROM warden.schedules s
  LEFT JOIN LATERAL (
       SELECT k.run_id, k.outcome FROM warden.schedule_ticks k
        WHERE k.tenant_id = s.tenant_id AND k.workflow_id = s.workflow_id
          AND k.schedule_name = s.name
        ORDER BY k.tick DESC LIMIT 1) t ON true
 WHERE (%(tenant_id)s::text IS NULL OR s.tenant_id = %(tenant_id)s)
   AND (%(include_inactive)s OR s.active)
 ORDER BY s.tenant_id, s.workflow_id, s.name;

-- name: schedule_set_paused :one
-- Pauses or resumes a schedule. A resumed one starts again from its next tick after now
-- (next_tick NULL): the ticks it slept through are not caught up.
UPDATE warden.schedules
   SET paused = %(paused)s,
       paused_by = CASE WHEN %(paused)s THEN %(by)s END,
       paused_at = CASE WHEN %(paused)s THEN now() END,
       next_tick = CASE WHEN %(paused)s THEN next_tick END,
       updated_at = now()
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s AND name = %(name)s
RETURNING *;

-- name: schedule_ticks_of :many
-- A schedule's most recent ticks, newest first.
SELECT * FROM warden.schedule_ticks
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s
   AND schedule_name = %(name)s
 ORDER BY tick DESC
 LIMIT %(limit)s;
