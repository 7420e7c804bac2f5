-- name: event_append :one
-- Appends one event to a run's timeline (locks the run; returns the event's seq).
SELECT warden.append_event(%(tenant_id)s, %(run_id)s, %(kind)s, %(step_id)s, %(job_id)s,
                           %(attempt)s, %(actor)s, %(data)s);

-- name: timeline_page :many
-- A page of a run's timeline after a seq cursor (primary key order, no cap overall). The
-- run's created_at names the one partition to read (pruned at run time).
SELECT * FROM warden.timeline
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND seq > %(after)s
   AND run_created_at = (SELECT r.created_at FROM warden.runs r
                          WHERE r.tenant_id = %(tenant_id)s AND r.run_id = %(run_id)s)
 ORDER BY seq
 LIMIT %(limit)s;

-- name: timeline_verify :one
-- Whether the run's hash chain holds.
SELECT warden.verify_timeline(%(run_id)s);

-- name: timeline_problems :many
-- The first thing wrong with each broken chain: of one run, of a tenant's runs, or of all
-- (one pass over the timeline; no row when every chain holds).
SELECT tenant_id, run_id, seq, problem
  FROM warden.timeline_problems(%(tenant_id)s, %(run_id)s);

-- name: timeline_problems_of_runs :many
-- The first thing wrong with each broken chain among a list of runs (what an anchor is
-- about to vouch for), one run at a time by primary key.
SELECT p.tenant_id, p.run_id, p.seq, p.problem
  FROM jsonb_to_recordset(%(runs)s) AS x(tenant_id text, run_id uuid)
 CROSS JOIN LATERAL warden.timeline_problems(x.tenant_id, x.run_id) AS p;

-- name: runs_count :one
-- How many runs a verify looked at (one run, a tenant's, or all).
SELECT count(*) FROM warden.runs
 WHERE (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s::text)
   AND (%(run_id)s::uuid IS NULL OR run_id = %(run_id)s::uuid);

-- name: chain_key_rotate :one
-- Retires the active chain key and makes the next one (owner only); returns its key_id.
SELECT warden.rotate_chain_key(%(by)s);

-- name: events_append :one
-- Appends a batch of one run's events in order (locks the run once; returns the last seq).
SELECT warden.append_events(%(tenant_id)s, %(run_id)s, %(events)s);

-- name: events_append_for_runs :exec
-- Appends the events of several runs, each run's batch in order, in one INSERT for all of
-- them (warden.append_events_for_runs; it locks the runs in (tenant, run) order).
SELECT warden.append_events_for_runs(%(batch)s);

-- name: run_heads :many
-- Every run's chain head (seq, hash) that has at least one event: what an anchor records.
SELECT tenant_id, run_id, timeline_seq AS seq, timeline_hash AS hash
  FROM warden.runs
 WHERE timeline_seq > 0
 ORDER BY tenant_id, run_id;

-- name: timeline_hashes_at :many
-- For each anchored point (tenant, run, seq), the hash the database holds there now: NULL
-- when that event is gone, and run_exists false when the run is gone (primary key lookups).
SELECT p.tenant_id, p.run_id, p.seq, t.hash,
       EXISTS (SELECT 1 FROM warden.runs r
                WHERE r.tenant_id = p.tenant_id AND r.run_id = p.run_id) AS run_exists
  FROM jsonb_to_recordset(%(points)s) AS p(tenant_id text, run_id uuid, seq bigint)
  LEFT JOIN warden.timeline t
         ON t.tenant_id = p.tenant_id AND t.run_id = p.run_id AND t.seq = p.seq;
