-- name: dispatch_plans_insert :exec
-- The dispatch plans of one workflow version under one policy snapshot
-- (sql/schema/62_dispatch_plans.sql), set-based. A plan is immutable and any writer
-- computes the same one from the same snapshot and version: one already there is kept.
INSERT INTO warden.dispatch_plans
    (tenant_id, workflow_id, workflow_version, snapshot_hash, step_id, rule, reason, input,
     created_by)
SELECT %(tenant_id)s, %(workflow_id)s, %(workflow_version)s, %(snapshot_hash)s, x.step_id,
       x.rule, x.reason, x.input, %(created_by)s
  FROM jsonb_to_recordset(%(plans)s) AS x(step_id text, rule text, reason text, input jsonb)
    ON CONFLICT DO NOTHING;


-- name: start_plans_insert :exec
-- The start plan of one workflow version under one policy snapshot
-- (sql/schema/63_start_plans.sql). Immutable, and any writer computes the same one from
-- the same snapshot and version: one already there is kept.
INSERT INTO warden.start_plans
    (tenant_id, workflow_id, workflow_version, snapshot_hash, timeout_ms, steps, submits,
     roots, created_by)
VALUES (%(tenant_id)s, %(workflow_id)s, %(workflow_version)s, %(snapshot_hash)s,
        %(timeout_ms)s, %(steps)s, %(submits)s, %(roots)s, %(created_by)s)
    ON CONFLICT DO NOTHING;
