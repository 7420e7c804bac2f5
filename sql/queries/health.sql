-- name: health_ping :one
-- The cheapest round trip that proves the database answers.
SELECT 1 AS ok;

-- name: metrics_jobs_by_state :many
-- Jobs by status and topic (unfinished ones, plus finished ones are counted by status).
SELECT status::text AS status, topic, count(*) AS n
  FROM warden.jobs GROUP BY status, topic;

-- name: metrics_runs_by_status :many
-- Runs by status.
SELECT status::text AS status, count(*) AS n FROM warden.runs GROUP BY status;

-- name: metrics_approvals_pending :one
-- Pending approvals and the age of the oldest, in seconds.
SELECT count(*) AS n,
       coalesce(extract(epoch FROM warden.now() - min(requested_at)), 0) AS oldest_age_s
  FROM warden.approvals WHERE status = 'pending';

-- name: metrics_unclaimed :many
-- Claimable jobs older than the dispatch timeout, and the oldest claimable job's age, by topic.
SELECT topic,
       count(*) FILTER (WHERE available_at < warden.now() - %(timeout)s::interval) AS unclaimed,
       extract(epoch FROM warden.now() - min(available_at)) AS oldest_age_s
  FROM warden.jobs
 WHERE status = 'pending' AND available_at <= warden.now()
 GROUP BY topic;

-- name: metrics_table_health :many
-- Live and dead tuples of the hot tables (the statistics collector's estimates): dead ones
-- piling up mean vacuum cannot keep up, or an old transaction holds it back. The
-- timeline's are the sum over its partitions (a partitioned table has no rows of its own).
SELECT coalesce(p.relname, s.relname) AS table_name, sum(s.n_live_tup)::bigint AS live,
       sum(s.n_dead_tup)::bigint AS dead
  FROM pg_stat_user_tables s
  LEFT JOIN pg_inherits i ON i.inhrelid = s.relid
  LEFT JOIN pg_class p ON p.oid = i.inhparent
 WHERE (s.schemaname = 'warden' AND s.relname IN ('jobs', 'runs', 'steps'))
    OR (s.schemaname = 'warden_partitions' AND p.relname = 'timeline'
        AND p.relnamespace = 'warden'::regnamespace)
 GROUP BY 1;

-- name: metrics_oldest_transaction :one
-- Age in seconds of the oldest transaction open in this database (other than ours), 0 if
-- none: it holds back vacuum of every table. Other roles' sessions are visible only to a
-- role with pg_read_all_stats.
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8 AS age_s
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND xact_start IS NOT NULL AND backend_type = 'client backend';
