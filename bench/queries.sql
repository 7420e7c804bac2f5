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
       -- off: dead tuples of the queue tables are never reclaimed while the bench runs
       current_setting('autovacuum') AS autovacuum,
       current_setting('max_wal_size') AS max_wal_size,
       current_setting('checkpoint_timeout') AS checkpoint_timeout,
       current_setting('max_connections')::int AS max_connections,
       current_setting('shared_preload_libraries') AS shared_preload_libraries,
       inet_server_addr()::text AS server_addr;

-- name: database_exists :one
-- Whether a database of that name exists.
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s) AS found;

-- name: database_create :exec
-- A measurement database cloned from the migrated template (identifiers, not values).
CREATE DATABASE {database} TEMPLATE {template};

-- name: database_create_empty :exec
-- The template itself, migrated once.
CREATE DATABASE {database};

-- name: database_drop :exec
-- WITH (FORCE): a child process that survived its SIGKILL must not keep the drop waiting.
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: database_track_functions :exec
-- Per-database, so no server restart: pg_stat_user_functions then times claim_jobs,
-- complete_job, append_event… (pg_stat_statements would need shared_preload_libraries).
ALTER DATABASE {database} SET track_functions = 'all';

-- name: worker_claim :many
-- bench/worker_calls.py: one claim of up to %(max_jobs)s jobs, as a worker makes it.
SELECT job_id, lease_token
  FROM warden.claim_jobs(%(topics)s, 'bench-calls', %(max_jobs)s, '5 min');

-- name: worker_complete :many
-- bench/worker_calls.py: the claimed jobs completed in one call, as a worker's completer.
SELECT job_id, outcome FROM warden.complete_jobs(%(job_ids)s, %(lease_tokens)s, %(results)s);

-- name: statement_mark_function :exec
-- bench/statement_times.py: the probe it puts before each top-level statement of a worker
-- function (in the bench database only). Adds the time since the previous probe of the
-- call to that probe's label, in this session's settings (warden_bench.<label>); the
-- probe's own cost falls between its two clock reads, outside every segment.
CREATE OR REPLACE FUNCTION public.warden_bench_mark(label text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_now  float8 := extract(epoch FROM clock_timestamp());
    v_last text := current_setting('warden_bench.last', true);
    v_open text := current_setting('warden_bench.open', true);
BEGIN
    IF coalesce(v_last, '') <> '' AND coalesce(v_open, '') <> '' THEN
        PERFORM set_config('warden_bench.' || v_open, (coalesce(nullif(current_setting(
            'warden_bench.' || v_open, true), ''), '0')::float8 + v_now - v_last::float8)::text,
            false);
        PERFORM set_config('warden_bench.n_' || v_open, (coalesce(nullif(current_setting(
            'warden_bench.n_' || v_open, true), ''), '0')::bigint + 1)::text, false);
    END IF;
    PERFORM set_config('warden_bench.open', CASE WHEN label = 'end' THEN '' ELSE label END,
                       false);
    PERFORM set_config('warden_bench.last', extract(epoch FROM clock_timestamp())::text, false);
END $$;

-- name: statement_times :many
-- bench/statement_times.py: each probe's accumulated seconds and segment count so far.
SELECT l AS label,
       coalesce(nullif(current_setting('warden_bench.' || l, true), ''), '0')::float8 AS seconds,
       coalesce(nullif(current_setting('warden_bench.n_' || l, true), ''), '0')::bigint AS n
  FROM unnest(%(labels)s::text[]) AS l;

-- name: stats_reset :exec
-- The database's pg_stat_* counters from zero (bench/worker_calls.py, before it times).
SELECT pg_stat_reset();

-- name: stats_flush :exec
-- This session's pending counts into pg_stat_*, before another session reads them.
SELECT pg_stat_force_next_flush();

-- name: checkpoint :exec
-- Every measurement starts right after a checkpoint, so each pays the same full-page
-- writes instead of whichever phase a timed checkpoint happens to fall into.
CHECKPOINT;

-- name: db_now :one
-- Database time: every latency is computed from database timestamps.
SELECT clock_timestamp() AS now;

-- name: unfinished_runs :one
-- How many runs are left when a drain missed its deadline. The bench's runs are all of
-- one tenant (bench/workload.py), and runs_by_status holds each by its status.
SELECT count(*) AS n FROM warden.runs
 WHERE tenant_id = %(tenant)s AND status IN ('pending', 'running', 'waiting');

-- name: any_unfinished_run :one
-- The drain's stop condition, polled every 0.2 s: 1 while any run is unfinished. Not a
-- count: under an old snapshot the index keeps an entry for every version of every run
-- open since, and counting them all five times a second was the bench's own largest load
-- on the server in the growth rounds (bench/README.md, session 10); this stops at the
-- first live one.
SELECT count(*) AS n FROM (
    SELECT 1 FROM warden.runs
     WHERE tenant_id = %(tenant)s AND status IN ('pending', 'running', 'waiting')
     LIMIT 1) AS one;

-- name: first_unfinished_of :one
-- The growth rounds' stop condition (bench/monitor.py, wait_finished): the position
-- (1-based) of the first of the given runs that is not finished, each looked up by its
-- primary key; NULL when all are. OFFSET 0 keeps each lookup a probe of runs_pkey.
SELECT min(k.i) AS i
  FROM unnest(%(run_ids)s::uuid[]) WITH ORDINALITY AS k(run_id, i)
 CROSS JOIN LATERAL (SELECT r.finished_at FROM warden.runs r
                      WHERE r.tenant_id = %(tenant)s AND r.run_id = k.run_id
                     OFFSET 0) r
 WHERE r.finished_at IS NULL;

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
-- One sample of what every busy backend of the children is doing right now; for a lock
-- wait, also what it waits for (a relation, or an object such as the NOTIFY queue's).
SELECT a.application_name, a.state,
       coalesce(a.wait_event_type || ':' || a.wait_event, 'CPU')
       || coalesce(' ' || (SELECT coalesce(l.relation::regclass::text,
                                           l.classid::regclass::text || '/' || l.objid)
                             FROM pg_locks l
                            WHERE l.pid = a.pid AND NOT l.granted
                              AND (l.relation IS NOT NULL OR l.classid IS NOT NULL)
                            LIMIT 1), '') AS wait,
       -- the engine's named queries start with their comment lines: show the SQL instead
       left(regexp_replace(regexp_replace(a.query, '^(\s*--[^\n]*\n)+', ''),
                           '\s+', ' ', 'g'), 70) AS query
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid() AND a.state <> 'idle'
   AND a.application_name LIKE 'bench-%%';

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

-- name: index_stats :many
-- The scans of each of the engine's indexes and the entries they read, since the last
-- stats_reset (bench/worker_calls.py).
SELECT indexrelname AS name, idx_scan AS scans, idx_tup_read AS entries
  FROM pg_stat_user_indexes
 WHERE schemaname = 'warden' AND idx_scan > 0;

-- name: table_stats :many
-- Row churn per table (HOT updates avoid index writes, so their share matters), and
-- sequential scans: on a queue table they mean a plan chosen when the table looked empty.
SELECT relname AS name, n_tup_ins AS inserted, n_tup_upd AS updated,
       n_tup_hot_upd AS hot_updated, n_dead_tup AS dead, seq_scan, seq_tup_read,
       last_autoanalyze IS NOT NULL AS autoanalyzed
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
       (SELECT count(*) FROM warden.policy_decisions) AS policy_decisions,
       -- the reconciler repairs what should not happen: a clean drain has none
       (SELECT count(*) FROM warden.timeline WHERE kind = 'reconciler.repaired') AS repairs;

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
-- Enqueue → claim per job: jobs.started_at − runs.created_at (both database time). The
-- stages come from the run's own timeline (clock_timestamp() per event): the scheduler
-- picking the run up (run.created → run.started), dispatching the job (→ job.dispatched)
-- and a worker claiming it (→ job.claimed; includes the scheduler's commit and NOTIFY).
-- A scheduler pass that buffers its events stamps them all when it writes them, at its
-- end: then "pickup" holds the whole pass and "dispatch" is close to zero.
WITH stage AS (
    SELECT t.run_id,
           min(t.at) FILTER (WHERE t.kind = 'run.created') AS created,
           min(t.at) FILTER (WHERE t.kind = 'run.started') AS picked,
           min(t.at) FILTER (WHERE t.kind = 'job.dispatched') AS dispatched,
           min(t.at) FILTER (WHERE t.kind = 'job.claimed') AS claimed
      FROM warden.timeline t
     GROUP BY t.run_id
), lat AS (
    SELECT (extract(epoch FROM j.started_at - r.created_at) * 1000)::float8 AS total_ms,
           (extract(epoch FROM s.picked - s.created) * 1000)::float8 AS pickup_ms,
           (extract(epoch FROM s.dispatched - s.picked) * 1000)::float8 AS dispatch_ms,
           (extract(epoch FROM s.claimed - s.dispatched) * 1000)::float8 AS claim_ms
      FROM warden.jobs j
      JOIN warden.runs r ON r.tenant_id = j.tenant_id AND r.run_id = j.run_id
      JOIN stage s ON s.run_id = j.run_id
     WHERE j.attempt = 1 AND j.started_at IS NOT NULL
)
SELECT count(*) AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) AS p99_ms,
       max(total_ms) AS max_ms, avg(total_ms) AS mean_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY pickup_ms) AS pickup_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY pickup_ms) AS pickup_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_ms) AS claim_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY claim_ms) AS claim_p99_ms
  FROM lat;

-- name: step_latency :one
-- Step → step per dependency edge: the next job's started_at − the previous job's
-- finished_at. Stages from the timeline: the scheduler reacting to the completion
-- (job.succeeded → next step.ready), dispatching (→ job.dispatched), the claim.
WITH ev AS (
    SELECT run_id, step_id, kind, min(at) AS at
      FROM warden.timeline
     WHERE kind IN ('job.succeeded', 'step.ready', 'job.dispatched', 'job.claimed')
     GROUP BY run_id, step_id, kind
), edge AS (
    SELECT (extract(epoch FROM nj.started_at - pj.finished_at) * 1000)::float8 AS total_ms,
           (extract(epoch FROM ready.at - done.at) * 1000)::float8 AS pickup_ms,
           (extract(epoch FROM disp.at - ready.at) * 1000)::float8 AS dispatch_ms,
           (extract(epoch FROM claim.at - disp.at) * 1000)::float8 AS claim_ms
      FROM warden.steps s
     CROSS JOIN LATERAL unnest(s.depends_on) AS dep(step_id)
      JOIN warden.jobs nj ON nj.tenant_id = s.tenant_id AND nj.run_id = s.run_id
                         AND nj.step_id = s.step_id AND nj.attempt = 1
      JOIN warden.jobs pj ON pj.tenant_id = s.tenant_id AND pj.run_id = s.run_id
                         AND pj.step_id = dep.step_id AND pj.attempt = 1
      JOIN ev done ON done.run_id = s.run_id AND done.step_id = dep.step_id
                  AND done.kind = 'job.succeeded'
      JOIN ev ready ON ready.run_id = s.run_id AND ready.step_id = s.step_id
                   AND ready.kind = 'step.ready'
      JOIN ev disp ON disp.run_id = s.run_id AND disp.step_id = s.step_id
                  AND disp.kind = 'job.dispatched'
      JOIN ev claim ON claim.run_id = s.run_id AND claim.step_id = s.step_id
                   AND claim.kind = 'job.claimed'
     WHERE nj.started_at IS NOT NULL AND pj.finished_at IS NOT NULL
)
SELECT count(*) AS edges,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) AS p99_ms,
       max(total_ms) AS max_ms, avg(total_ms) AS mean_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY pickup_ms) AS pickup_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY pickup_ms) AS pickup_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY dispatch_ms) AS dispatch_p99_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_ms) AS claim_p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY claim_ms) AS claim_p99_ms
  FROM edge;

-- name: run_duration :one
-- Whole-run latency (created → finished), for the chain measurement.
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99_ms
  FROM (SELECT (extract(epoch FROM finished_at - created_at) * 1000)::float8 AS d
          FROM warden.runs WHERE finished_at IS NOT NULL) AS runs;

-- name: created_rate :one
-- How fast runs were really created (database time), next to the rate that was asked for.
SELECT count(*) AS runs,
       ((count(*) - 1) / nullif(extract(epoch FROM max(created_at) - min(created_at)), 0))::float8
           AS created_per_s
  FROM warden.runs;

-- name: peer_queued :one
-- The peer's drain stop condition: pgqueuer deletes a job's row when it completes, so
-- an empty queue table means every job (and every chain's last step) is done.
SELECT count(*) AS n FROM pgqueuer;

-- name: peer_connections :many
-- How many connections each peer worker process holds (its consumers and its pool).
SELECT application_name, count(*) AS n FROM pg_stat_activity
 WHERE datname = current_database() AND application_name LIKE 'bench-peer-%%'
 GROUP BY application_name;

-- name: flow_timer_lag :one
-- bench/flow.py: per fired timer, how long after its fire time the step succeeded.
SELECT count(*) AS fired,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99_ms,
       max(lag_ms) AS max_ms,
       (SELECT count(*) FROM warden.timeline WHERE kind = 'timer.fired') AS fired_events
  FROM (SELECT extract(epoch FROM s.finished_at - s.wake_at) * 1000 AS lag_ms
          FROM warden.steps s WHERE s.type = 'sleep' AND s.status = 'succeeded') t;

-- name: flow_wait_lag :one
-- bench/flow.py: per matched wait, how long after the event's receipt the step succeeded.
SELECT count(*) AS matched,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99_ms,
       max(lag_ms) AS max_ms
  FROM (SELECT extract(epoch FROM s.finished_at - e.received_at) * 1000 AS lag_ms
          FROM warden.steps s
          JOIN warden.events e ON e.tenant_id = s.tenant_id AND e.name = s.await_event
                              AND e.key = s.await_key
         WHERE s.type = 'wait_event' AND s.status = 'succeeded') t;

-- name: flow_open_steps :one
-- bench/flow.py: steps of the given type not yet finished.
SELECT count(*) AS open FROM warden.steps
 WHERE type = %(type)s::warden.step_type AND finished_at IS NULL;

-- name: flow_fire_at :one
-- bench/flow.py: the shared fire time of its timers, 15 s ahead on the database clock.
SELECT to_char((warden.now() + interval '15 seconds') AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at;
-- name: growth_history :exec
-- Finished history for the growth measurement (bench/growth.py): %(runs)s one-step runs
-- that succeeded a day ago, each with its step, its job and %(events)s timeline events.
-- Written directly (as the bench's admin role, like a restore would): what matters here
-- is that the rows and their index entries exist, not that their chains verify.
WITH r AS (
    INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, status, input,
                             request_digest, created_by, created_at, started_at,
                             finished_at, needs_scheduling, timeline_seq)
    SELECT 'default', %(workflow_id)s, '1.0.0', 'succeeded', '{}', 'history', 'bench',
           now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
           false, %(events)s
      FROM generate_series(1, %(runs)s)
    RETURNING tenant_id, run_id
), s AS (
    INSERT INTO warden.steps (tenant_id, run_id, step_id, type, topic, status, attempts,
                              started_at, finished_at, output)
    SELECT tenant_id, run_id, 'only', 'job', 'bench.noop', 'succeeded', 1,
           now() - interval '1 day', now() - interval '1 day', '{}' FROM r
    RETURNING tenant_id, run_id
), j AS (
    INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic, status,
                             input, upstream, constraints, created_at, available_at,
                             started_at, finished_at, worker, result)
    SELECT tenant_id, run_id::text || ':only@1', run_id, 'only', 1, 'bench.noop', 'succeeded',
           '{}', '{}', '{}', now() - interval '1 day', now() - interval '1 day',
           now() - interval '1 day', now() - interval '1 day', 'history', '{}' FROM s
    RETURNING tenant_id, run_id
)
-- run_created_at: the timeline's partition key is its run's created_at (one value for
-- every run of this statement: now() is the statement's)
INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, actor, data,
                             prev_hash, hash, key_id, run_created_at)
SELECT j.tenant_id, j.run_id, n, now() - interval '1 day', 'step.ready', 'only', 'history',
       '{}', repeat('0', 64), md5(j.run_id::text || n) || md5(n::text),
       (SELECT k.key_id FROM warden.chain_keys k WHERE k.retired_at IS NULL),
       now() - interval '1 day'
  FROM j, generate_series(1, %(events)s) AS n;

-- name: growth_analyze :exec
-- Fresh statistics after the history load (this server runs with autovacuum off).
ANALYZE;

-- name: growth_claim_latency :one
-- Enqueue → claim of the runs created since %(since)s (jobs.started_at − runs.created_at),
-- along runs_by_created so the history is not read.
SELECT count(*) AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY x.ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY x.ms) AS p99_ms
  FROM (SELECT (extract(epoch FROM j.started_at - r.created_at) * 1000)::float8 AS ms
          FROM warden.runs r
          JOIN warden.jobs j ON j.tenant_id = r.tenant_id AND j.run_id = r.run_id
         WHERE r.tenant_id = 'default' AND r.created_at >= %(since)s
           AND j.attempt = 1 AND j.started_at IS NOT NULL) x;

-- name: growth_wal :one
-- The server's WAL so far (cluster-wide; the bench is alone on its server): a round's
-- difference over its jobs is the WAL a job cost, full-page images apart.
SELECT wal_bytes::float8 AS bytes, wal_fpi::float8 AS fpi FROM pg_stat_wal;

-- name: growth_sizes :one
-- What the tables hold, dead tuples included (the held transaction keeps them).
SELECT (SELECT count(*) FROM warden.jobs) AS jobs,
       (SELECT count(*) FROM warden.timeline) AS events,
       (SELECT sum(n_dead_tup) FROM pg_stat_user_tables WHERE schemaname = 'warden')
           AS dead_tuples;

-- name: growth_hold :exec
-- The other session's open transaction: a snapshot that holds back vacuum's horizon.
BEGIN ISOLATION LEVEL REPEATABLE READ;

-- name: growth_hold_snapshot :one
SELECT txid_current() AS xid, count(*) AS runs FROM warden.runs;

-- name: growth_release :exec
ROLLBACK;

-- name: event_starts_lag :one
-- bench/event_starts.py: per event-started run, how long after its event's receipt the
-- run was created (the NOTIFY, the loop's pass, the start through the submit gate).
SELECT count(*) AS runs, count(DISTINCT s.event_id) AS events,
       count(*) - count(DISTINCT (s.event_id, s.workflow_id)) AS duplicates,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms) AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms) AS p99_ms,
       max(lag_ms) AS max_ms
  FROM (SELECT s.event_id, s.workflow_id,
               extract(epoch FROM r.created_at - e.received_at) * 1000 AS lag_ms
          FROM warden.event_starts s
          JOIN warden.events e ON e.tenant_id = s.tenant_id AND e.event_id = s.event_id
          JOIN warden.runs r ON r.tenant_id = s.tenant_id AND r.run_id = s.run_id
         WHERE s.outcome = 'started') s;

-- name: event_starts_count :one
-- bench/event_starts.py: (event, workflow) pairs handled so far.
SELECT count(*) AS handled FROM warden.event_starts;

-- name: enqueue_stages :many
-- Each one-step run's times in epoch seconds (database clock): its creation (the start
-- transaction's beginning), its job.dispatched event (written inside the start), the
-- claim transaction's beginning (jobs.started_at) and its job.claimed event (written
-- inside the claim). bench/enqueue_stages.py sets them beside its own clock.
SELECT r.run_id,
       extract(epoch FROM r.created_at)::float8 AS created,
       extract(epoch FROM d.at)::float8 AS dispatched,
       extract(epoch FROM j.started_at)::float8 AS claim_began,
       extract(epoch FROM c.at)::float8 AS claimed
  FROM warden.runs r
  JOIN warden.jobs j ON j.tenant_id = r.tenant_id AND j.run_id = r.run_id AND j.attempt = 1
  JOIN warden.timeline d ON d.tenant_id = r.tenant_id AND d.run_id = r.run_id
                        AND d.kind = 'job.dispatched'
  JOIN warden.timeline c ON c.tenant_id = r.tenant_id AND c.run_id = r.run_id
                        AND c.kind = 'job.claimed'
 WHERE j.started_at IS NOT NULL;
