-- name: worker_register :one
-- A worker announces itself at start (warden.worker_register: the row records its login
-- role and prunes workers gone for a day).
SELECT w.*, 'live'::text AS state
  FROM warden.worker_register(%(name)s, %(host)s, %(pid)s, %(topics)s, %(concurrency)s,
                              %(version)s, %(heartbeat_ms)s) AS w;

-- name: worker_heartbeat :one
-- A registered worker says it is alive and how many jobs it holds; no row back = its row
-- is gone (pruned while the worker was cut off) or stopped, and it registers again.
SELECT w.*, 'live'::text AS state
  FROM warden.worker_heartbeat(%(worker_id)s, %(jobs_in_flight)s) AS w;

-- name: worker_stop :exec
-- A worker's clean exit: kept for a day as stopped, so operators see that it left.
SELECT warden.worker_stop(%(worker_id)s);

-- name: workers_list :many
-- Every known worker with its derived state: live (seen within three heartbeats), dead
-- (silent longer: killed, cut off, or hung) or stopped (exited cleanly); live ones first.
SELECT w.*,
       CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
            WHEN w.last_seen_at > now() - make_interval(secs => 3 * w.heartbeat_ms / 1000.0)
                THEN 'live'
            ELSE 'dead' END AS state
  FROM warden.workers w
 WHERE (%(include_gone)s OR (w.stopped_at IS NULL AND w.last_seen_at >
        now() - make_interval(secs => 3 * w.heartbeat_ms / 1000.0)))
 ORDER BY (w.stopped_at IS NULL AND w.last_seen_at >
           now() - make_interval(secs => 3 * w.heartbeat_ms / 1000.0)) DESC,
          w.name, w.started_at;

-- name: workers_live_per_topic :many
-- How many live workers poll each of the given topics (topics nobody polls: 0). Uses the
-- GIN index workers_topics through the && overlap.
SELECT t.topic, count(w.worker_id) AS live_workers
  FROM unnest(%(topics)s::text[]) AS t(topic)
  LEFT JOIN warden.workers w
    ON w.topics && ARRAY[t.topic]
   AND w.stopped_at IS NULL
   AND w.last_seen_at > now() - make_interval(secs => 3 * w.heartbeat_ms / 1000.0)
 GROUP BY t.topic;

-- name: queues_list :many
-- One row per topic that has pending or running jobs (of the tenant, or every tenant), a
-- claim in the last minute, or a live worker polling it: depth (pending jobs, and how many
-- of them are claimable now), the age of the oldest claimable one, the claims of the last
-- minute (jobs_by_started), and the live workers polling it (workers_topics).
WITH pending AS (
    SELECT topic, count(*) AS depth,
           count(*) FILTER (WHERE available_at <= now()) AS ready,
           extract(epoch FROM now() - min(available_at) FILTER (WHERE available_at <= now()))
               AS oldest_age_s
      FROM warden.jobs
     WHERE status = 'pending' AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
     GROUP BY topic
), running AS (
    SELECT topic, count(*) AS running
      FROM warden.jobs
     WHERE status = 'running' AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
     GROUP BY topic
), claims AS (
    SELECT topic, count(*) AS claimed_last_minute
      FROM warden.jobs
     WHERE started_at > now() - interval '1 minute'
       AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
     GROUP BY topic
), polling AS (
    SELECT t.topic, count(*) AS live_workers, array_agg(w.name ORDER BY w.name) AS workers
      FROM warden.workers w CROSS JOIN LATERAL unnest(w.topics) AS t(topic)
     WHERE w.stopped_at IS NULL
       AND w.last_seen_at > now() - make_interval(secs => 3 * w.heartbeat_ms / 1000.0)
     GROUP BY t.topic
)
SELECT topic,
       coalesce(p.depth, 0) AS depth, coalesce(p.ready, 0) AS ready,
       p.oldest_age_s::float8 AS oldest_age_s,
       coalesce(r.running, 0) AS running,
       coalesce(c.claimed_last_minute, 0) AS claimed_last_minute,
       coalesce(w.live_workers, 0) AS live_workers,
       coalesce(w.workers, '{}') AS workers
  FROM pending p
  FULL JOIN running r USING (topic)
  FULL JOIN claims c USING (topic)
  FULL JOIN polling w USING (topic)
 ORDER BY topic;

-- name: metrics_unattended :many
-- Pending jobs per topic that no live worker polls: work nobody will take, from the
-- first second (warden_jobs_unclaimed waits for the dispatch timeout). Counted per topic
-- first, so the workers are asked once per topic, not once per pending job.
SELECT p.topic, p.n
  FROM (SELECT topic, count(*) AS n FROM warden.jobs WHERE status = 'pending'
         GROUP BY topic) p
 WHERE NOT EXISTS (
       SELECT 1 FROM warden.workers w
        WHERE w.topics && ARRAY[p.topic] AND w.stopped_at IS NULL
          AND w.last_seen_at > now() - make_interval(secs => 3 * w.heartbeat_ms / 1000.0));
