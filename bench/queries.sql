-- name: server_facts :one
-- The server and the settings that decide how fast a durable commit can be.
SELECT split_part(version(), ' on ', 1) AS version,
       current_setting('server_version_num')::int AS version_num,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('fsync') AS fsync,
       current_setting('full_page_writes') AS full_page_writes,
       current_setting('wal_sync_method') AS wal_sync_method,
       current_setting('commit_delay') AS commit_delay,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('max_connections')::int AS max_connections,
       current_setting('shared_preload_libraries') AS shared_preload_libraries,
       inet_server_addr()::text AS server_addr;

-- name: database_exists :one
-- Whether a database of that name exists.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s) AS found;

-- name: database_create :exec
-- A measurement database cloned from the migrated template (identifiers, not values).
CREATE DATABASE {name} TEMPLATE {template};

-- name: database_create_empty :exec
-- The template itself, migrated once.
CREATE DATABASE {name};

-- name: database_drop :exec
-- WITH (FORCE): a child process that survived its SIGKILL must not keep the drop waiting.
DROP DATABASE IF EXISTS {name} WITH (FORCE);

-- name: database_track_functions :exec
-- Per-database, so no server restart: pg_stat_user_functions then times claim_jobs,
-- complete_job, append_event… (pg_stat_statements would need shared_preload_libraries).
ALTER DATABASE {name} SET track_functions = 'all';

-- name: analyze :exec
-- Planner statistics for the freshly enqueued rows, so the drain does not start on the
-- plans of empty tables and then switch when autovacuum's ANALYZE lands mid-measurement.
ANALYZE;

-- name: checkpoint :exec
-- Every measurement starts right after a checkpoint, so each pays the same full-page
-- writes instead of whichever phase a timed checkpoint happens to fall into.
CHECKPOINT;

-- name: db_now :one
-- Database time: every latency is computed from database timestamps.
SELECT clock_timestamp() AS now;

-- name: unfinished_runs :one
-- The drain's stop condition, polled every 0.2 s.
SELECT count(*) AS n FROM warden.runs WHERE finished_at IS NULL;

-- name: listeners :many
-- Which bench children hold their LISTEN connection open: the sign they are idle-ready.
SELECT application_name FROM pg_stat_activity
 WHERE datname = current_database() AND query LIKE 'LISTEN %%';

-- name: backends :many
-- The server processes serving the bench children (for their CPU time in /proc).
SELECT pid, application_name FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid();

-- name: activity_sample :many
-- One sample of what every busy backend of the children is doing right now.
SELECT application_name, state,
       coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait,
       left(regexp_replace(query, '\s+', ' ', 'g'), 70) AS query
  FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid() AND state NOT IN ('idle')
   AND application_name LIKE 'bench-%%';

-- name: db_counters :one
-- Cumulative counters, diffed around a drain. pg_stat_wal is server-wide (others' load
-- shows up in it); pg_stat_database is this database only.
SELECT d.xact_commit, d.xact_rollback, d.tup_inserted, d.tup_updated, d.deadlocks,
       d.blks_read, d.blks_hit, w.wal_records, w.wal_fpi, w.wal_bytes::bigint AS wal_bytes,
       w.wal_write, w.wal_sync
  FROM pg_stat_database d, pg_stat_wal w
 WHERE d.datname = current_database();

-- name: function_stats :many
-- Time spent inside the engine's SQL functions (track_functions = all).
SELECT funcname AS name, calls, total_time AS total_ms, self_time AS self_ms
  FROM pg_stat_user_functions
 WHERE schemaname = 'warden'
 ORDER BY total_time DESC;

-- name: table_stats :many
-- Row churn per table; HOT updates avoid index writes, so their share matters.
SELECT relname AS name, n_tup_ins AS inserted, n_tup_upd AS updated,
       n_tup_hot_upd AS hot_updated, n_dead_tup AS dead
  FROM pg_stat_user_tables
 WHERE schemaname = 'warden' AND n_tup_ins + n_tup_upd > 0
 ORDER BY n_tup_ins + n_tup_upd DESC;

-- name: shape_counts :one
-- What one measurement left in its database.
SELECT (SELECT count(*) FROM warden.runs) AS runs,
       (SELECT count(*) FROM warden.runs WHERE status = 'succeeded') AS runs_succeeded,
       (SELECT count(*) FROM warden.jobs) AS jobs,
       (SELECT count(*) FROM warden.jobs WHERE status = 'succeeded') AS jobs_succeeded,
       (SELECT count(*) FROM warden.timeline) AS timeline_events,
       (SELECT count(*) FROM warden.policy_decisions) AS policy_decisions;

-- name: timeline_count :one
-- Events written so far (the enqueue's share is subtracted from the drain's).
SELECT count(*) AS n FROM warden.timeline;

-- name: drain_window :one
-- The exact edges of a drain, from its start: the first claim and the last run finished.
SELECT extract(epoch FROM (SELECT min(started_at) FROM warden.jobs) - %(since)s)::float8
           AS first_claim_s,
       extract(epoch FROM (SELECT max(finished_at) FROM warden.runs) - %(since)s)::float8
           AS last_finish_s;

-- name: claim_latency :one
-- Enqueue → claim per job: jobs.started_at − runs.created_at (both database time), and
-- its two halves: the scheduler's dispatch (job row created) and the worker's claim.
WITH lat AS (
    SELECT extract(epoch FROM j.started_at - r.created_at) * 1000 AS total_ms,
           extract(epoch FROM j.created_at - r.created_at) * 1000 AS dispatch_ms,
           extract(epoch FROM j.started_at - j.created_at) * 1000 AS claim_ms
      FROM warden.jobs j
      JOIN warden.runs r ON r.tenant_id = j.tenant_id AND r.run_id = j.run_id
     WHERE j.attempt = 1 AND j.started_at IS NOT NULL
)
SELECT count(*) AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) AS p99_ms,
       max(total_ms) AS max_ms, avg(total_ms) AS mean_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_ms) AS claim_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY claim_ms) AS claim_p99_ms
  FROM lat;

-- name: step_latency :one
-- Step → step per dependency edge: the next job's started_at − the previous job's
-- finished_at, split into the scheduler's reaction (next job created) and the claim.
WITH edge AS (
    SELECT extract(epoch FROM nj.started_at - pj.finished_at) * 1000 AS total_ms,
           extract(epoch FROM nj.created_at - pj.finished_at) * 1000 AS dispatch_ms,
           extract(epoch FROM nj.started_at - nj.created_at) * 1000 AS claim_ms
      FROM warden.steps s
     CROSS JOIN LATERAL unnest(s.depends_on) AS dep(step_id)
      JOIN warden.jobs nj ON nj.tenant_id = s.tenant_id AND nj.run_id = s.run_id
                         AND nj.step_id = s.step_id AND nj.attempt = 1
      JOIN warden.jobs pj ON pj.tenant_id = s.tenant_id AND pj.run_id = s.run_id
                         AND pj.step_id = dep.step_id AND pj.attempt = 1
     WHERE nj.started_at IS NOT NULL AND pj.finished_at IS NOT NULL
)
SELECT count(*) AS edges,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) AS p99_ms,
       max(total_ms) AS max_ms, avg(total_ms) AS mean_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_ms) AS claim_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY claim_ms) AS claim_p99_ms
  FROM edge;

-- name: run_duration :one
-- Whole-run latency (created → finished), for the chain measurement.
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99_ms
  FROM (SELECT extract(epoch FROM finished_at - created_at) * 1000 AS d
          FROM warden.runs WHERE finished_at IS NOT NULL) AS runs;
