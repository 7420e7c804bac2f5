-- name: approval_insert :one
-- Requests a decision; at most one pending approval per step (approvals_one_pending_per_step).
INSERT INTO warden.approvals
    (tenant_id, run_id, step_id, job_id, kind, policy_snapshot_hash, job_hash, requested_by,
     expires_at)
VALUES (%(tenant_id)s, %(run_id)s, %(step_id)s, %(job_id)s, %(kind)s, %(policy_snapshot_hash)s,
        %(job_hash)s, %(requested_by)s,
        warden.now() + make_interval(secs => %(expires_in_ms)s::bigint / 1000.0))
RETURNING *;

-- name: approval_decide :one
-- Records a human decision on a pending, unexpired approval; no row back = not pending
-- any more (decided, expired or superseded). Self-approval is refused by the
-- approvals_no_self_approval constraint, whatever the caller checked before.
UPDATE warden.approvals
   SET status = %(to_status)s, decided_by = %(decided_by)s, decided_at = warden.now(),
       reason = %(reason)s
 WHERE tenant_id = %(tenant_id)s AND approval_id = %(approval_id)s AND status = 'pending'
   AND (expires_at IS NULL OR expires_at > warden.now())
RETURNING *;

-- name: approval_get :one
-- One approval of a tenant.
SELECT * FROM warden.approvals WHERE tenant_id = %(tenant_id)s AND approval_id = %(approval_id)s;

-- name: approval_get_any_tenant :one
-- One approval by id alone, for host-side operator tools.
SELECT * FROM warden.approvals WHERE approval_id = %(approval_id)s;

-- name: approvals_list :many
-- A tenant's approvals (or every tenant's), optionally by status, oldest request first
-- (a queue), keyset-paginated on (requested_at, approval_id).
SELECT * FROM warden.approvals
 WHERE (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s::text)
   AND (%(status)s::warden.approval_status IS NULL
        OR status = %(status)s::warden.approval_status)
   AND (%(after_requested)s::timestamptz IS NULL
        OR (requested_at, approval_id) > (%(after_requested)s::timestamptz, %(after_id)s::uuid))
 ORDER BY requested_at, approval_id
 LIMIT %(limit)s;

-- name: approvals_by_id_prefix :many
-- Approvals whose id starts with a prefix (a uuid range on the primary key), of a tenant
-- or of every tenant (host-side CLI); the caller asks for two to tell a unique match.
SELECT * FROM warden.approvals
 WHERE approval_id BETWEEN %(id_low)s::uuid AND %(id_high)s::uuid
   AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s::text)
 ORDER BY approval_id
 LIMIT %(limit)s;

-- name: approvals_context :many
-- For a page of the approvals queue, what each one is about, in one statement: the run's
-- workflow version and status, and the held job's topic (policy approvals).
SELECT a.approval_id, r.workflow_id, r.workflow_version, r.status::text AS run_status,
       j.topic
  FROM unnest(%(tenant_ids)s::text[], %(approval_ids)s::uuid[]) AS k(tenant_id, approval_id)
  JOIN warden.approvals a ON a.tenant_id = k.tenant_id AND a.approval_id = k.approval_id
  JOIN warden.runs r ON r.tenant_id = a.tenant_id AND r.run_id = a.run_id
  LEFT JOIN warden.jobs j ON j.tenant_id = a.tenant_id AND j.job_id = a.job_id;

-- name: approvals_of_run :many
-- Every approval of a run.
SELECT * FROM warden.approvals
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
 ORDER BY requested_at;

-- name: approvals_due_jobs_lock :many
-- The blocked jobs that expired policy approvals hold back, locked first (lock order jobs
-- -> approvals -> runs): expiring the approval then times the job out without waiting on
-- it after the run. SKIP LOCKED: a job someone else holds now is left for the next pass,
-- and so is its approval (approvals_expire takes only the ones whose job is held here).
SELECT j.* FROM warden.jobs j
 WHERE (j.tenant_id, j.job_id) IN (
       SELECT a.tenant_id, a.job_id FROM warden.approvals a
        WHERE a.status = 'pending' AND a.expires_at <= warden.now() AND a.job_id IS NOT NULL
        ORDER BY a.expires_at
        LIMIT %(limit)s)
 ORDER BY j.tenant_id, j.job_id
   FOR UPDATE OF j SKIP LOCKED;

-- name: approvals_of_runs :many
-- Every approval of these runs: the approval waits of the runs a scheduler pass ended,
-- read only when traces are on (engine/process/tracing.py).
SELECT a.* FROM warden.approvals a
  JOIN unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[]) AS k(tenant_id, run_id)
    ON a.tenant_id = k.tenant_id AND a.run_id = k.run_id
 ORDER BY a.requested_at;

-- name: approvals_expire :many
-- Ends pending approvals past their expiry: those of approval steps, and those whose held
-- job the caller has locked (approvals_due_jobs_lock). SKIP LOCKED: one being decided
-- right now is left to its decider (whose own guard refuses it if it has expired).
WITH due AS (
    SELECT tenant_id, approval_id FROM warden.approvals
     WHERE status = 'pending' AND expires_at <= warden.now()
       AND (job_id IS NULL OR (tenant_id, job_id) IN (
            SELECT * FROM unnest(%(job_tenants)s::text[], %(job_ids)s::text[])))
     ORDER BY expires_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE warden.approvals a
   SET status = 'expired', decided_at = warden.now(), reason = 'expired without a decision'
  FROM due
 WHERE a.tenant_id = due.tenant_id AND a.approval_id = due.approval_id
RETURNING a.*;

-- name: approval_pending_of_step_lock :one
-- Locks the pending approval of a step for the scheduler. SKIP LOCKED: if a decider holds
-- it right now, the scheduler backs off and retries (the decider will wake the run),
-- instead of waiting while holding the run lock the decider needs next.
SELECT * FROM warden.approvals
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND status = 'pending'
   FOR UPDATE SKIP LOCKED;

-- name: approval_pending_of_job_lock :one
-- approval_pending_of_step_lock for the approval that holds one job back (an item of a
-- for_each step has its own).
SELECT * FROM warden.approvals
 WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s AND status = 'pending'
   FOR UPDATE SKIP LOCKED;

-- name: approval_close :one
-- Ends a pending approval without a human decision (superseded or expired).
UPDATE warden.approvals
   SET status = %(to_status)s, decided_at = warden.now(), reason = %(reason)s
 WHERE tenant_id = %(tenant_id)s AND approval_id = %(approval_id)s AND status = 'pending'
RETURNING *;

-- name: approvals_lock_pending_of_run :many
-- Locks a run's pending approvals (before the run: lock order jobs -> approvals -> runs).
SELECT * FROM warden.approvals
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND status = 'pending'
 ORDER BY approval_id
   FOR UPDATE;

-- name: approvals_lock_pending_of_run_nowait :many
-- approvals_lock_pending_of_run from a parent's scheduler pass (see
-- jobs_lock_open_of_run_nowait).
SELECT * FROM warden.approvals
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND status = 'pending'
 ORDER BY approval_id
   FOR UPDATE NOWAIT;
