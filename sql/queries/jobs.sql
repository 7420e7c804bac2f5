-- name: job_insert :one
-- Creates one attempt of a job step (pending, blocked for approval, or denied at once).
-- The previous attempt's last checkpoint is carried over, so a crashed attempt's
-- successor resumes where it stopped. It is found by its primary key (the job id's format
-- is a CHECK of warden.jobs), the one lookup every plan makes with an index probe,
-- whatever the statistics said when the plan was made (docs/design.md#plans-that-age).
INSERT INTO warden.jobs
    (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority, input, upstream,
     constraints, checkpoint, timeout_ms, available_at, policy_snapshot_hash, finished_at,
     traceparent, item_index, concurrency_key, concurrency_limit, rate_key, rate_limit,
     rate_per_ms)
VALUES (%(tenant_id)s, %(run_id)s::text || ':' || %(step_id)s
            || coalesce('[' || %(item_index)s::integer || ']', '') || '@' || %(attempt)s,
        %(run_id)s, %(step_id)s, %(attempt)s, %(topic)s, %(status)s, %(priority)s, %(input)s,
        %(upstream)s, %(constraints)s,
        (SELECT p.checkpoint FROM warden.jobs p
          WHERE p.tenant_id = %(tenant_id)s
            AND p.job_id = %(run_id)s::text || ':' || %(step_id)s
                || coalesce('[' || %(item_index)s::integer || ']', '') || '@'
                || (%(attempt)s - 1)),
        %(timeout_ms)s, greatest(warden.now(), coalesce(%(available_at)s, warden.now())),
        %(policy_snapshot_hash)s,
        CASE WHEN %(status)s::warden.job_status = 'denied' THEN warden.now() END,
        %(traceparent)s, %(item_index)s, %(concurrency_key)s, %(concurrency_limit)s,
        %(rate_key)s, %(rate_limit)s, %(rate_per_ms)s)
RETURNING *;

-- name: jobs_announce :exec
-- Wakes workers of the given topics. One NOTIFY per topic: Postgres folds duplicates of
-- one transaction, and the payload is the topic only, never tenant data.
SELECT pg_notify('warden_jobs', t) FROM unnest(%(topics)s::text[]) AS t;

-- name: jobs_claim :many
-- Claims up to max_jobs claimable jobs of the topics through warden.claim_jobs — the
-- protocol every worker uses, whatever its language — each with its claim latency in
-- seconds: from the job becoming available to this claim, on the database clock. Nothing
-- here reads a table: a worker role may only execute the protocol's functions.
SELECT c.job_id, c.run_id, c.step_id, c.attempt, c.topic, c.input, c.upstream,
       c.checkpoint, c.constraints, c.lease_token, c.lease_expires_at, c.tenant_id,
       extract(epoch FROM c.started_at - c.available_at)::float8 AS waited_s, c.traceparent
  FROM warden.claim_jobs(%(topics)s, %(worker)s, %(max_jobs)s, %(lease)s) AS c;

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
-- Times out up to `limit` leases that expired within `lookback` (NULL: ever) and
-- schedules their retries.
SELECT warden.reap_expired_jobs(%(limit)s, %(lookback)s::interval);

-- name: jobs_advance_claim_marks :one
-- Raises each lane's claim floor to its first pending job (docs/design.md#claim-floors);
-- how many lanes moved. Autocommit, READ COMMITTED: the function checks it.
SELECT warden.advance_claim_marks();

-- name: job_get :one
-- One job of a tenant.
SELECT * FROM warden.jobs WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s;

-- name: jobs_of_run :many
-- Every attempt of every step of a run, in creation order.
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
 ORDER BY created_at, step_id, item_index NULLS FIRST, attempt;

-- name: job_transition :one
-- Moves an unclaimed job from the status the caller saw (re-evaluation, approval,
-- expiry); a denied, cancelled or timed-out job is final. No row = it moved meanwhile.
UPDATE warden.jobs
   SET status = %(to_status)s,
       policy_snapshot_hash = coalesce(%(snapshot_hash)s, policy_snapshot_hash),
       constraints = coalesce(%(constraints)s, constraints),
       timeout_ms = coalesce(%(timeout_ms)s, timeout_ms),
       available_at = CASE WHEN %(to_status)s::warden.job_status = 'pending'
                           THEN greatest(available_at, warden.now()) ELSE available_at END,
       finished_at = CASE WHEN %(final)s THEN warden.now() END,
       error = coalesce(%(error)s, error)
 WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s AND status = %(from_status)s
RETURNING *;

-- name: job_lock :one
-- Locks one job of a tenant before a change that also touches its approval and run (lock
-- order jobs -> approvals -> runs -> steps).
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s
   FOR UPDATE;

-- name: jobs_lock_open_of_run :many
-- Locks a run's unfinished jobs, in job_id order, before the run itself (lock order
-- jobs -> approvals -> runs): cancellation then never deadlocks with a completing worker.
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   AND status IN ('blocked', 'pending', 'running')
 ORDER BY job_id
   FOR UPDATE;

-- name: job_end :one
-- Ends an unfinished job because its run ended (cancelled, or timed out). A running one
-- learns it at its next heartbeat (WD002 or WD001), and its late completion is fenced:
-- complete_job requires status running. The caller holds the job's lock (it read the row
-- FOR UPDATE), so the status it names is the one the row still has.
UPDATE warden.jobs
   SET status = %(to_status)s, finished_at = warden.now(), error = %(error)s
 WHERE tenant_id = %(tenant_id)s AND job_id = %(job_id)s AND status = %(from_status)s
RETURNING *;

-- name: jobs_lock_new_of_run :many
-- After the run is locked: jobs dispatched since the first sweep. SKIP LOCKED, because
-- taking a job lock after the run lock reverses the lock order; a job a claimer holds
-- right now is cancelled by claim_jobs itself once it sees the run has ended.
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   AND status IN ('blocked', 'pending', 'running')
 ORDER BY job_id
   FOR UPDATE SKIP LOCKED;

-- name: jobs_page :many
-- A page of a tenant's jobs, newest first, keyset-paginated on (created_at, job_id).
-- Uses jobs_by_status_topic when status is given.
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s
   AND (%(status)s::warden.job_status IS NULL OR status = %(status)s::warden.job_status)
   AND (%(topic)s::text IS NULL OR topic = %(topic)s::text)
   AND (%(before_created)s::timestamptz IS NULL
        OR (created_at, job_id) < (%(before_created)s::timestamptz, %(before_id)s::text))
 ORDER BY created_at DESC, job_id DESC
 LIMIT %(limit)s;

-- name: job_release :exec
-- Gives a job back (worker stopping): the next attempt is scheduled at once and the
-- released one is not counted against the step's retries.
SELECT warden.release_job(%(job_id)s, %(lease_token)s, %(reason)s);

-- name: jobs_complete_many :many
-- Completes a worker's batch of jobs in one transaction (one commit for all of them);
-- each job's outcome says whether its lease still held (see warden.complete_jobs).
SELECT * FROM warden.complete_jobs(%(job_ids)s, %(lease_tokens)s, %(results)s);

-- name: jobs_insert_many :exec
-- job_insert for a pass's batch of claimable jobs (pending), set-based; each carries the
-- previous attempt's last checkpoint, found by its primary key as job_insert does.
INSERT INTO warden.jobs
    (tenant_id, job_id, run_id, step_id, attempt, topic, status, priority, input, upstream,
     constraints, checkpoint, timeout_ms, available_at, policy_snapshot_hash, traceparent,
     item_index, concurrency_key, concurrency_limit, rate_key, rate_limit, rate_per_ms)
SELECT x.tenant_id,
       x.run_id::text || ':' || x.step_id || coalesce('[' || x.item_index || ']', '')
           || '@' || x.attempt,
       x.run_id, x.step_id, x.attempt, x.topic, 'pending', x.priority, x.input, x.upstream,
       x.constraints,
       (SELECT p.checkpoint FROM warden.jobs p
         WHERE p.tenant_id = x.tenant_id
           AND p.job_id = x.run_id::text || ':' || x.step_id
               || coalesce('[' || x.item_index || ']', '') || '@' || (x.attempt - 1)),
       x.timeout_ms, greatest(warden.now(), coalesce(x.available_at, warden.now())),
       x.policy_snapshot_hash, x.traceparent, x.item_index, x.concurrency_key,
       x.concurrency_limit, x.rate_key, x.rate_limit, x.rate_per_ms
  FROM jsonb_to_recordset(%(jobs)s) AS x(
       tenant_id text, run_id uuid, step_id text, attempt integer, topic text,
       priority smallint, input jsonb, upstream jsonb, constraints jsonb, timeout_ms integer,
       available_at timestamptz, policy_snapshot_hash text, traceparent text,
       item_index integer, concurrency_key text, concurrency_limit integer, rate_key text,
       rate_limit integer, rate_per_ms integer);

-- name: jobs_drifted_of_runs :many
-- Jobs of these runs not yet claimed (pending or blocked) whose recorded policy snapshot
-- is no longer their tenant's active one: the scheduler re-evaluates them. The pass holds
-- its runs already, and locking a job after its run reverses the lock order: NOWAIT, so a
-- job a claimer holds right now fails the pass at once (the scheduler retries its runs one
-- by one, a moment later) instead of waiting on a claimer that waits on the run.
-- One probe per run (LATERAL, not a join): a pass's generic plan, made while the partial
-- index jobs_awaiting_claim looked empty, had walked all of it for every pass and joined
-- the batch after; while an old snapshot kept every claimed job's entry there, that was
-- 96 ms a pass (bench/README.md, session 10).
SELECT j.* FROM unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[]) AS k(tenant_id, run_id)
 CROSS JOIN LATERAL (
       SELECT * FROM warden.jobs j
        WHERE j.tenant_id = k.tenant_id AND j.run_id = k.run_id
          AND j.status IN ('pending', 'blocked')
          AND j.policy_snapshot_hash IS DISTINCT FROM (
              SELECT a.snapshot_hash FROM warden.policy_active a
               WHERE a.tenant_id = j.tenant_id)
          FOR UPDATE OF j NOWAIT) j;

-- name: jobs_lock_open_of_step :many
-- The unfinished jobs of a for_each step whose outcome is decided (an item failed or was
-- denied): the scheduler ends them. It holds the run already, and locking a job after
-- its run reverses the lock order: NOWAIT, as for jobs_drifted_of_runs (a job a worker
-- is writing right now fails the pass, retried a moment later).
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND step_id = %(step_id)s
   AND status IN ('blocked', 'pending', 'running')
 ORDER BY job_id
   FOR UPDATE NOWAIT;

-- name: jobs_lock_open_of_run_nowait :many
-- jobs_lock_open_of_run for a child run ended from its parent's scheduler pass, which
-- holds the parent: NOWAIT, so a job a worker is writing fails the pass (retried) instead
-- of waiting on a worker that may wait on a run that waits on the parent.
SELECT * FROM warden.jobs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   AND status IN ('blocked', 'pending', 'running')
 ORDER BY job_id
   FOR UPDATE NOWAIT;
