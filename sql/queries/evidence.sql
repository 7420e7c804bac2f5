-- name: evidence_runs :many
-- The runs an export covers: one run, or a tenant's runs created in [since, until)
-- (runs_by_created), each as a JSON document without the engine's bookkeeping columns.
SELECT to_jsonb(r) - 'needs_scheduling' - 'flag_seq' - 'request_digest' AS doc
  FROM warden.runs r
 WHERE (%(run_id)s::uuid IS NULL OR r.run_id = %(run_id)s::uuid)
   AND (%(tenant_id)s::text IS NULL OR r.tenant_id = %(tenant_id)s::text)
   AND (%(since)s::timestamptz IS NULL OR r.created_at >= %(since)s::timestamptz)
   AND (%(until)s::timestamptz IS NULL OR r.created_at < %(until)s::timestamptz)
 ORDER BY r.tenant_id, r.created_at, r.run_id;

-- name: evidence_events :many
-- A run's whole timeline, in seq order (primary key; the run's partition alone).
SELECT to_jsonb(t) AS doc FROM warden.timeline t
 WHERE t.tenant_id = %(tenant_id)s AND t.run_id = %(run_id)s
   AND t.run_created_at = (SELECT r.created_at FROM warden.runs r
                            WHERE r.tenant_id = %(tenant_id)s AND r.run_id = %(run_id)s)
 ORDER BY t.seq;

-- name: evidence_decisions :many
-- A run's policy decisions, in the order they were made (policy_decisions_by_run).
SELECT to_jsonb(d) AS doc FROM warden.policy_decisions d
 WHERE d.tenant_id = %(tenant_id)s AND d.run_id = %(run_id)s
 ORDER BY d.decision_id;

-- name: evidence_approvals :many
-- A run's approvals with their context (warden.approval_evidence).
SELECT to_jsonb(a) AS doc FROM warden.approval_evidence a
 WHERE a.tenant_id = %(tenant_id)s AND a.run_id = %(run_id)s
 ORDER BY a.requested_at, a.approval_id;

-- name: evidence_jobs :many
-- A run's job attempts with their decisions and approvals (warden.job_evidence).
SELECT to_jsonb(j) AS doc FROM warden.job_evidence j
 WHERE j.tenant_id = %(tenant_id)s AND j.run_id = %(run_id)s
 ORDER BY j.created_at, j.job_id;

-- name: evidence_snapshot :exec
-- First statement of an export's transaction: every query after it reads one snapshot, so
-- a run's head and its events agree even while the run moves on.
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;
