-- name: policy_snapshot_insert :one
-- Stores a bundle under its content hash; returns nothing if that snapshot exists.
INSERT INTO warden.policy_snapshots (tenant_id, snapshot_hash, bundle, source, created_by)
VALUES (%(tenant_id)s, %(snapshot_hash)s, %(bundle)s, %(source)s, %(created_by)s)
ON CONFLICT (tenant_id, snapshot_hash) DO NOTHING
RETURNING tenant_id, snapshot_hash, bundle, created_by, created_at;

-- name: policy_snapshot_get :one
-- One stored snapshot of a tenant.
SELECT tenant_id, snapshot_hash, bundle, created_by, created_at
  FROM warden.policy_snapshots
 WHERE tenant_id = %(tenant_id)s AND snapshot_hash = %(snapshot_hash)s;

-- name: policy_snapshots_list :many
-- A tenant's snapshots, newest first.
SELECT tenant_id, snapshot_hash, bundle, created_by, created_at
  FROM warden.policy_snapshots
 WHERE tenant_id = %(tenant_id)s
 ORDER BY created_at DESC, snapshot_hash
 LIMIT %(limit)s;

-- name: policy_active_get :one
-- The tenant's active snapshot hash (no row: none active, the configured default applies).
SELECT tenant_id, snapshot_hash, activated_by, activated_at
  FROM warden.policy_active WHERE tenant_id = %(tenant_id)s;

-- name: policy_active_lock :one
-- Locks the tenant's active pointer so concurrent activations record the right previous.
SELECT tenant_id, snapshot_hash, activated_by, activated_at
  FROM warden.policy_active WHERE tenant_id = %(tenant_id)s
   FOR UPDATE;

-- name: policy_active_set :exec
-- Points the tenant at a snapshot.
INSERT INTO warden.policy_active (tenant_id, snapshot_hash, activated_by)
VALUES (%(tenant_id)s, %(snapshot_hash)s, %(activated_by)s)
ON CONFLICT (tenant_id) DO UPDATE
   SET snapshot_hash = EXCLUDED.snapshot_hash, activated_by = EXCLUDED.activated_by,
       activated_at = warden.now();

-- name: policy_active_readers :one
-- The transactions other than this session's that hold a lock on warden.policy_active now
-- (their virtual transaction ids): every dispatcher (a scheduler pass, a start,
-- complete_jobs, claim_jobs) reads the active pointer inside the transaction that writes
-- its jobs, and holds that lock until it commits. pg_locks is readable by every role.
SELECT coalesce(array_agg(DISTINCT l.virtualtransaction), '{}') AS readers
  FROM pg_catalog.pg_locks l
 WHERE l.locktype = 'relation' AND l.granted
   AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
   AND l.relation = 'warden.policy_active'::regclass
   AND l.pid <> pg_catalog.pg_backend_pid();

-- name: policy_readers_open :one
-- How many of these transactions are still open (each holds the lock on its own virtual
-- transaction id until it ends; a later transaction of the same session has another id).
SELECT count(*) AS open FROM pg_catalog.pg_locks l
 WHERE l.locktype = 'virtualxid' AND l.virtualxid = ANY (%(readers)s::text[]);

-- name: policy_activation_insert :one
-- Records an activation with the snapshot it replaced.
INSERT INTO warden.policy_activations (tenant_id, snapshot_hash, previous_hash, activated_by)
VALUES (%(tenant_id)s, %(snapshot_hash)s, %(previous_hash)s, %(activated_by)s)
RETURNING tenant_id, activation_id, snapshot_hash, previous_hash, activated_by, activated_at;

-- name: policy_flag_drifted_runs :one
-- Wakes the scheduler for every run of the tenant with a job not yet claimed, so each is
-- re-evaluated under the new snapshot before a worker can take it. Runs are locked in
-- (tenant, run) order, like every multi-run writer. Returns how many were flagged.
WITH open_runs AS (
    SELECT r.tenant_id, r.run_id FROM warden.runs r
     WHERE r.tenant_id = %(tenant_id)s
       AND EXISTS (SELECT 1 FROM warden.jobs j
                    WHERE j.tenant_id = r.tenant_id AND j.run_id = r.run_id
                      AND j.status IN ('pending', 'blocked'))
     ORDER BY r.tenant_id, r.run_id
       FOR NO KEY UPDATE OF r
), flagged AS (
    UPDATE warden.runs r SET needs_scheduling = true
      FROM open_runs o
     WHERE r.tenant_id = o.tenant_id AND r.run_id = o.run_id
    RETURNING 1
)
SELECT count(*) AS flagged, pg_notify('warden_scheduler', '') IS NULL AS notified FROM flagged;

-- name: policy_decision_insert :one
-- Records one decision of one gate, in its run's partition (run_created_at: the run's
-- created_at, which the foreign key policy_decisions_run_partition checks).
INSERT INTO warden.policy_decisions
    (tenant_id, stage, snapshot_hash, rule, decision, reason, constraints, run_id, step_id,
     job_id, run_created_at)
VALUES (%(tenant_id)s, %(stage)s, %(snapshot_hash)s, %(rule)s, %(decision)s, %(reason)s,
        %(constraints)s, %(run_id)s, %(step_id)s, %(job_id)s,
        (SELECT r.created_at FROM warden.runs r
          WHERE r.tenant_id = %(tenant_id)s AND r.run_id = %(run_id)s))
RETURNING *;

-- name: policy_decisions_of_job :many
-- Every decision about one job (dispatch, and re-evaluations after policy changes).
SELECT * FROM warden.policy_decisions
 WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s
 ORDER BY decision_id;

-- name: policy_decisions_of_run :many
-- Every decision about a run, submit and dispatch, in order.
SELECT * FROM warden.policy_decisions
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
 ORDER BY decision_id;

-- name: policy_decisions_insert_many :many
-- Decisions recorded together (a run's submit gate, a scheduler pass's dispatches),
-- set-based; returns each one's id with its (run, step, job). Each row takes its run's
-- created_at as its partition key: a subquery per row, so always an index lookup of the
-- run (a join could seq-scan runs on a misestimate of the JSON's rows).
INSERT INTO warden.policy_decisions
    (tenant_id, stage, snapshot_hash, rule, decision, reason, constraints, run_id, step_id,
     job_id, run_created_at)
SELECT x.tenant_id, x.stage, x.snapshot_hash, x.rule, x.decision, x.reason, x.constraints,
       x.run_id, x.step_id, x.job_id,
       (SELECT r.created_at FROM warden.runs r
         WHERE r.tenant_id = x.tenant_id AND r.run_id = x.run_id)
  FROM jsonb_to_recordset(%(decisions)s) AS x(
       tenant_id text, stage warden.policy_stage, snapshot_hash text, rule text,
       decision warden.policy_decision, reason text, constraints jsonb, run_id uuid,
       step_id text, job_id text)
RETURNING run_id, step_id, job_id, decision_id;
