-- name: job_insert :one
-- Creates one attempt of a job step. The previous attempt's last checkpoint is carried
-- over, so a crashed attempt's successor resumes where it stopped.
INSERT INTO warden.jobs
    (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority, input, upstream,
     constraints, checkpoint, timeout_ms, available_at, policy_snapshot_hash)
VALUES (%(tenant_id)s, %(run_id)s::text || ':' || %(step_id)s || '@' || %(attempt)s,
        %(run_id)s, %(step_id)s, %(attempt)s, %(topic)s, %(status)s, %(priority)s, %(input)s,
        %(upstream)s, %(constraints)s,
        (SELECT p.checkpoint FROM warden.jobs p
          WHERE p.tenant_id = %(tenant_id)s AND p.run_id = %(run_id)s
            AND p.step_id = %(step_id)s AND p.attempt = %(attempt)s - 1),
        %(timeout_ms)s, greatest(now(), coalesce(%(available_at)s, now())),
        %(policy_snapshot_hash)s)
RETURNING *;

-- name: jobs_announce :exec
-- Wakes workers of the given topics. One NOTIFY per topic: Postgres folds duplicates of
-- one transaction, and the payload is the topic only, never tenant data.
SELECT pg_notify('warden_jobs', t) FROM unnest(%(topics)s::text[]) AS t;

-- name: jobs_claim :many
-- Claims up to max_jobs claimable jobs of the topics (see warden.claim_jobs).
SELECT * FROM warden.claim_jobs(%(topics)s, %(worker)s, %(max_jobs)s, %(lease)s);

-- name: job_heartbeat :one
-- Extends a lease (and stores a checkpoint); raises WD001/WD002 if the lease is gone.
SELECT warden.heartbeat_job(%(job_id)s, %(lease_token)s, %(extend)s, %(checkpoint)s);

-- name: job_complete :exec
-- Completes a job under its lease token (fenced: WD001/WD002 if the lease is gone).
SELECT warden.complete_job(%(job_id)s, %(lease_token)s, %(result)s);

-- name: job_fail :exec
-- Fails a job under its lease token; schedules the retry when one is left.
SELECT warden.fail_job(%(job_id)s, %(lease_token)s, %(error)s, %(retryable)s);

-- name: jobs_reap_expired :one
-- Times out up to `limit` expired leases and schedules their retries.
SELECT warden.reap_expired_jobs(%(limit)s);

-- name: job_get :one
-- One job of a tenant.
SELECT * FROM warden.jobs WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s;

-- name: jobs_of_run :many
-- Every attempt of every step of a run, in creation order.
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
 ORDER BY created_at, step_id, attempt;
