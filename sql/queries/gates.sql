-- name: gates_waiting_of_run :many
-- Why a run's pending gated jobs wait (docs/workflows.md#concurrency-and-rate-limits):
-- the running jobs of each job's concurrency key, the claims of its rate key inside the
-- window, and when the window next frees a claim (the limit-th most recent claim ages
-- out). Read through jobs_running_by_key and jobs_claims_by_rate_key.
SELECT j.job_id, j.concurrency_key, j.concurrency_limit,
       CASE WHEN j.concurrency_key <> '' THEN (
           SELECT count(*) FROM warden.jobs r
            WHERE r.tenant_id = j.tenant_id AND r.concurrency_key = j.concurrency_key
              AND r.status = 'running') END AS running,
       j.rate_key, j.rate_limit, j.rate_per_ms,
       CASE WHEN j.rate_key <> '' THEN (
           SELECT count(*) FROM warden.jobs r
            WHERE r.tenant_id = j.tenant_id AND r.rate_key = j.rate_key
              AND r.started_at > warden.now() - make_interval(secs => j.rate_per_ms / 1000.0))
       END AS claims_in_window,
       CASE WHEN j.rate_key <> '' THEN (
           SELECT r.started_at + make_interval(secs => j.rate_per_ms / 1000.0)
             FROM warden.jobs r
            WHERE r.tenant_id = j.tenant_id AND r.rate_key = j.rate_key
              AND r.started_at > warden.now() - make_interval(secs => j.rate_per_ms / 1000.0)
            ORDER BY r.started_at DESC
           OFFSET j.rate_limit - 1 LIMIT 1) END AS rate_free_at
  FROM warden.jobs j
 WHERE j.tenant_id = %(tenant_id)s AND j.run_id = %(run_id)s AND j.status = 'pending'
   AND (j.concurrency_key <> '' OR j.rate_key <> '');

-- name: gates_metrics :many
-- /metrics (docs/workflows.md#concurrency-and-rate-limits): per tenant and key, the jobs running under a
-- concurrency key and its limit (the smallest any pending or running job carries), and
-- the jobs pending behind it; per rate key, the claims inside the window and its limit.
SELECT 'concurrency' AS kind, j.tenant_id, j.concurrency_key AS key,
       min(j.concurrency_limit) AS "limit",
       count(*) FILTER (WHERE j.status = 'running') AS in_use,
       count(*) FILTER (WHERE j.status = 'pending') AS waiting
  FROM warden.jobs j
 WHERE j.status IN ('pending', 'running') AND j.concurrency_key <> ''
 GROUP BY j.tenant_id, j.concurrency_key
UNION ALL
SELECT 'rate', j.tenant_id, j.rate_key, min(j.rate_limit),
       count(*) FILTER (WHERE j.started_at > warden.now()
                        - make_interval(secs => j.rate_per_ms / 1000.0)),
       count(*) FILTER (WHERE j.status = 'pending')
  FROM warden.jobs j
 WHERE j.rate_key <> '' AND (j.status = 'pending' OR j.started_at > warden.now()
                             - make_interval(secs => j.rate_per_ms / 1000.0))
 GROUP BY j.tenant_id, j.rate_key;
