-- name: partitions_ensure :one
-- Creates the partitions of this month and the months ahead where missing (how many).
SELECT warden.ensure_partitions(%(months_ahead)s);

-- name: retention_partitions :many
-- Every timeline partition, oldest first, with what keeps it (owner only).
SELECT month_start, month_end, runs, open_runs, recent_runs, needed_runs, droppable
  FROM warden.retention_partitions(%(cutoff)s);

-- name: retention_heads :many
-- The chain heads of the runs of one partition's month (what its archive must hold).
SELECT tenant_id, run_id, timeline_seq AS seq, timeline_hash AS hash
  FROM warden.runs
 WHERE created_at >= %(month_start)s AND created_at < %(month_end)s
 ORDER BY tenant_id, run_id;

-- name: retention_drop :one
-- Detaches and drops one month's partitions after their archive verified (owner only).
SELECT warden.retention_drop(%(month_start)s, %(cutoff)s, %(runs)s, %(archive)s, %(sha256)s,
                             %(by)s);

-- name: archived_runs :many
-- The runs retention archived: of one run, of a tenant, or all.
SELECT tenant_id, run_id, timeline_seq AS seq, timeline_hash AS hash, archive,
       archive_sha256, archived_at
  FROM warden.archived_runs
 WHERE (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s::text)
   AND (%(run_id)s::uuid IS NULL OR run_id = %(run_id)s::uuid)
 ORDER BY tenant_id, run_id;

-- name: database_now :one
-- The database clock (warden.now()): retention's cutoff is measured on it.
SELECT warden.now();
