-- name: event_triggers_sync :exec
-- A workflow's newest version subscribes to these event names
-- (docs/workflows.md#event-started-runs): upsert each; a subscription that was inactive
-- (or new) is active from now on, so events received before it start nothing. Names the
-- version no longer subscribes to become inactive. Only for the newest version: the
-- caller checks.
WITH declared AS (
    SELECT * FROM jsonb_to_recordset(%(on_event)s) AS x(name text, input jsonb)
), upserted AS (
    INSERT INTO warden.event_triggers AS t
        (tenant_id, workflow_id, event_name, workflow_version, input, since)
    SELECT %(tenant_id)s, %(workflow_id)s, d.name, %(version)s, coalesce(d.input, '{}'),
           warden.now()
      FROM declared d
    ON CONFLICT (tenant_id, workflow_id, event_name) DO UPDATE
       SET workflow_version = excluded.workflow_version, input = excluded.input,
           since = CASE WHEN t.active THEN t.since ELSE excluded.since END,
           active = true, updated_at = now()
    RETURNING t.event_name
)
UPDATE warden.event_triggers t SET active = false, updated_at = now()
 WHERE t.tenant_id = %(tenant_id)s AND t.workflow_id = %(workflow_id)s AND t.active
   AND t.event_name NOT IN (SELECT d.name FROM declared d);

-- name: event_starts_lock_pending :many
-- Events of every tenant (the loop acts across tenants) that an active subscription has
-- not handled yet: received since the subscription became active, not expired, no ledger
-- row. The subscriptions are locked for this pass, SKIP LOCKED: several serve processes
-- take disjoint subscriptions. Not the events: locking a row takes UPDATE privilege, and
-- warden.events is written by send_event alone (the engine has no privilege on it).
SELECT e.tenant_id, e.event_id, e.name AS event_name, e.key AS event_key,
       e.data AS event_data, e.received_at, t.workflow_id, t.workflow_version, t.input
  FROM warden.event_triggers t
  JOIN warden.events e ON e.tenant_id = t.tenant_id AND e.name = t.event_name
                      AND e.received_at >= t.since AND e.expires_at > warden.now()
 WHERE t.active
   AND NOT EXISTS (SELECT 1 FROM warden.event_starts s
                    WHERE s.tenant_id = e.tenant_id AND s.event_id = e.event_id
                      AND s.workflow_id = t.workflow_id)
 ORDER BY e.received_at, e.tenant_id, e.event_id, t.workflow_id
 LIMIT %(limit)s
   FOR UPDATE OF t SKIP LOCKED;

-- name: event_start_record :one
-- A handled (event, workflow); the primary key makes it once. No row back: it was
-- recorded before (another serve, or this one before a restart).
INSERT INTO warden.event_starts (tenant_id, event_id, workflow_id, event_name, outcome,
                                 run_id, error)
VALUES (%(tenant_id)s, %(event_id)s, %(workflow_id)s, %(event_name)s, %(outcome)s,
        %(run_id)s, %(error)s)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: event_start_of_run :one
-- The event that started a run, if one did. Uses event_starts_by_run.
SELECT s.*, e.key AS event_key
  FROM warden.event_starts s
  LEFT JOIN warden.events e ON e.tenant_id = s.tenant_id AND e.event_id = s.event_id
 WHERE s.tenant_id = %(tenant_id)s AND s.run_id = %(run_id)s;

-- name: event_starts_of_event :many
-- What one event started, by workflow.
SELECT s.*, NULL::text AS event_key FROM warden.event_starts s
 WHERE s.tenant_id = %(tenant_id)s AND s.event_id = %(event_id)s
 ORDER BY s.workflow_id;
