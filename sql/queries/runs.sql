-- name: run_insert :one
-- Creates a run; with an idempotency key already used for this workflow it returns no
-- row (the unique constraint runs_idempotency decides, even under concurrent starts).
INSERT INTO warden.runs
    (tenant_id, run_id, workflow_id, workflow_version, input, idempotency_key,
     request_digest, rerun_of, created_by, deadline_at, parent_run_id, parent_step_id,
     parent_item_index, parent_attempt, pins, depth, priority, created_at)
VALUES (%(tenant_id)s, %(run_id)s, %(workflow_id)s, %(workflow_version)s, %(input)s,
        %(idempotency_key)s,
        %(request_digest)s, %(rerun_of)s, %(created_by)s,
        warden.now() + make_interval(secs => %(timeout_ms)s::bigint / 1000.0),
        %(parent_run_id)s, %(parent_step_id)s, %(parent_item_index)s, %(parent_attempt)s,
        %(pins)s, %(depth)s, %(priority)s,
        -- the database clock, as every other time the engine compares: created_at picks
        -- the partition of the run's events (sql/schema/50_timeline.sql)
        warden.now())
ON CONFLICT ON CONSTRAINT runs_idempotency DO NOTHING
RETURNING *;

-- name: run_by_idempotency_key :one
-- The run an idempotency key already created.
SELECT * FROM warden.runs
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s
   AND idempotency_key = %(idempotency_key)s;

-- name: run_get :one
-- One run of a tenant.
SELECT * FROM warden.runs WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s;

-- name: run_get_any_tenant :one
-- One run by id alone, for operator tools that are not tenant-scoped (CLI on the host).
SELECT * FROM warden.runs WHERE run_id = %(run_id)s;

-- name: run_rerun_chain :many
-- A run and every run it reruns, back to the original (depth 0 = the run itself), with who
-- started each: those principals may never decide the run's approvals (the same walk as
-- warden.approval_bar_rerun_chain). The depth bound ends the walk should rerun_of ever
-- form a cycle (the engine never makes one: a rerun names a run that already exists).
WITH RECURSIVE chain (run_id, rerun_of, created_by, depth) AS (
    SELECT run_id, rerun_of, created_by, 0 FROM warden.runs
     WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
    UNION
    SELECT r.run_id, r.rerun_of, r.created_by, c.depth + 1
      FROM chain c JOIN warden.runs r ON r.tenant_id = %(tenant_id)s AND r.run_id = c.rerun_of
     WHERE c.depth < 10000
)
SELECT run_id, rerun_of, created_by, depth FROM chain ORDER BY depth;

-- name: run_list :many
-- A page of a tenant's runs, newest first, keyset-paginated on (created_at, run_id) along
-- runs_by_created, each filter optional: status; who denied a denied run (policy: a rule
-- or the default; approval: a human rejected it; the same rule as engine.views.denied_by);
-- workflow; an id prefix as a uuid range (the primary key's order is the hex order); a
-- creation time range; the idempotency key; the run a rerun came from; and input fields
-- by jsonb containment
-- (input @> {"incident_id": "INC-1"}). No index on input: a GIN index would be written on
-- every non-HOT update of a run (several per run), while a page stops after `limit` rows.
SELECT * FROM warden.runs
 WHERE tenant_id = %(tenant_id)s
   AND (%(status)s::warden.run_status IS NULL OR status = %(status)s::warden.run_status)
   AND (%(denied_by)s::text IS NULL OR %(denied_by)s::text =
        CASE WHEN status <> 'denied' THEN NULL
             WHEN error @? '$.*.type ? (@ == "PolicyDenied")' THEN 'policy'
             WHEN error @? '$.*.type ? (@ == "ApprovalRejected")' THEN 'approval' END)
   AND (%(workflow_id)s::text IS NULL OR workflow_id = %(workflow_id)s::text)
   AND (%(id_low)s::uuid IS NULL OR run_id BETWEEN %(id_low)s::uuid AND %(id_high)s::uuid)
   AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s::timestamptz)
   AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s::timestamptz)
   AND (%(idempotency_key)s::text IS NULL OR idempotency_key = %(idempotency_key)s::text)
   AND (%(rerun_of)s::uuid IS NULL OR rerun_of = %(rerun_of)s::uuid)
   AND (%(input_match)s::jsonb IS NULL OR input @> %(input_match)s::jsonb)
   AND (%(before_created)s::timestamptz IS NULL
        OR (created_at, run_id) < (%(before_created)s::timestamptz, %(before_run)s::uuid))
 ORDER BY created_at DESC, run_id DESC
 LIMIT %(limit)s;

-- name: runs_by_id_prefix :many
-- Runs whose id starts with a prefix (a uuid range on the primary key), of a tenant or
-- of every tenant (host-side CLI); the caller asks for two to tell a unique match.
SELECT * FROM warden.runs
 WHERE run_id BETWEEN %(id_low)s::uuid AND %(id_high)s::uuid
   AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s::text)
 ORDER BY run_id
 LIMIT %(limit)s;

-- name: runs_lock_for_scheduling :many
-- Takes up to `limit` runs that may move, flagged at or after the scheduler's floor
-- (warden.scheduling_floor; 0 for a full look), in flagging order, but the given ones
-- (runs this scheduler saw fail lately: retried later, alone, so they do not fail every
-- batch). SKIP LOCKED: several schedulers share the work and none waits for a run another
-- one (or a worker's transaction) is touching. The partial index runs_to_schedule keeps
-- this cheap however many runs exist, and the floor however many flags were cleared
-- since an old snapshot was taken (docs/design.md#scheduling-floors).
SELECT * FROM warden.runs r
 WHERE r.needs_scheduling AND r.flag_seq >= %(floor)s
   AND NOT EXISTS (
       SELECT 1 FROM unnest(%(skip_tenant_ids)s::text[], %(skip_run_ids)s::uuid[])
                  AS k(tenant_id, run_id)
        WHERE k.tenant_id = r.tenant_id AND k.run_id = r.run_id)
 ORDER BY r.flag_seq
 LIMIT %(limit)s
   FOR NO KEY UPDATE SKIP LOCKED;

-- name: scheduling_floor :one
-- The scheduler's next floor, from the one it had; NULL: keep it (the lock was busy).
-- Autocommit, READ COMMITTED: the function checks it.
SELECT warden.scheduling_floor(%(floor)s) AS floor;

-- name: run_lock :one
-- Locks one run for a change (waits for other writers of the same run).
SELECT * FROM warden.runs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   FOR NO KEY UPDATE;

-- name: run_transition :one
-- Moves a run from the status the caller saw to another; no row back means it moved
-- meanwhile. Final statuses stamp finished_at, leaving pending stamps started_at.
UPDATE warden.runs
   SET status = %(to_status)s,
       started_at = coalesce(started_at, CASE WHEN %(to_status)s <> 'pending' THEN warden.now() END),
       finished_at = CASE WHEN %(final)s THEN warden.now() END,
       output = coalesce(%(output)s, output),
       error = coalesce(%(error)s, error)
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND status = %(from_status)s
RETURNING *;

-- name: run_mark_scheduled :exec
-- Clears the scheduler flag after a pass over the run (the run is locked by the caller).
UPDATE warden.runs SET needs_scheduling = false
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND needs_scheduling;

-- name: run_wake :exec
-- Asks the schedulers to look at a run again.
SELECT warden.wake_run(%(tenant_id)s, %(run_id)s);

-- name: runs_lock_for_scheduling_ids :many
-- Re-takes given runs, still flagged, one scheduler transaction each (after a batch
-- failed as a whole). SKIP LOCKED for the same reason as runs_lock_for_scheduling.
SELECT r.* FROM warden.runs r
  JOIN unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[]) AS k(tenant_id, run_id)
    ON r.tenant_id = k.tenant_id AND r.run_id = k.run_id
 WHERE r.needs_scheduling
 ORDER BY r.tenant_id, r.run_id
   FOR NO KEY UPDATE OF r SKIP LOCKED;

-- name: runs_observe_ends :many
-- Takes up to `limit` ends a worker's completion wrote within `lookback` (NULL: ever;
-- warden.complete_jobs inserts them into warden.run_ends) and deletes them, so each end
-- is observed once (metrics, traces) by whichever serve takes it, with the run as it
-- ended. SKIP LOCKED: serves share them and never wait for each other; run_ends_by_time
-- keeps the lookup to the unobserved few, however many runs exist, and the lookback to
-- the last seconds of them however many an old snapshot keeps
-- (docs/design.md#lookbacks). The rows taken are deleted by ctid from an array the
-- lookup fills once (an InitPlan; a row locked FOR UPDATE keeps its ctid): written as a
-- join to the lookup, the planner put the lookup on the inner side of a nested loop and
-- ran it again for every row of run_ends, 5 s a call under an old snapshot
-- (bench/README.md, session 12). The run is read by key, not locked: a final run no
-- longer changes.
WITH taken AS (
    DELETE FROM warden.run_ends e
     WHERE e.ctid = ANY (ARRAY(
           SELECT t.ctid FROM warden.run_ends t
            WHERE t.finished_at >= CASE WHEN %(lookback)s::interval IS NULL
                                        THEN '-infinity'::timestamptz
                                        ELSE warden.now() - %(lookback)s::interval END
            ORDER BY t.finished_at
            LIMIT %(limit)s
              FOR UPDATE SKIP LOCKED))
    RETURNING e.tenant_id, e.run_id
)
-- each run by its primary key (OFFSET 0: never a join the planner could turn into a
-- scan of every run)
SELECT r.tenant_id, r.run_id, r.workflow_id, r.workflow_version, r.status, r.created_by,
       r.created_at, r.finished_at
  FROM taken k
 CROSS JOIN LATERAL (SELECT u.* FROM warden.runs u
                      WHERE u.tenant_id = k.tenant_id AND u.run_id = k.run_id
                     OFFSET 0) r;

-- name: runs_end_pass :exec
-- The end of a scheduler pass for each of its runs, in one update per run: the status
-- change the pass decided, if any (guarded by the status the pass saw; the caller
-- compares the row count), and the scheduler flag cleared. Same stamping rules as
-- run_transition. Parallel arrays through unnest, not a JSON recordset: the planner
-- guesses 10 rows for unnest of a parameter (an index nested loop over runs_pkey) but
-- 100 for jsonb_to_recordset, enough for a hash join that reads the whole table on
-- every pass.
UPDATE warden.runs r
   SET status = coalesce(x.to_status, r.status),
       started_at = CASE WHEN x.to_status IS NULL THEN r.started_at
                         ELSE coalesce(r.started_at,
                                       CASE WHEN x.to_status <> 'pending' THEN warden.now() END) END,
       finished_at = CASE WHEN x.to_status IS NULL THEN r.finished_at
                          WHEN x.final THEN warden.now() END,
       output = coalesce(x.output, r.output),
       error = coalesce(x.error, r.error),
       needs_scheduling = false
  FROM unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[],
              %(from_statuses)s::text[]::warden.run_status[],
              %(to_statuses)s::text[]::warden.run_status[], %(finals)s::boolean[],
              %(outputs)s::jsonb[], %(errors)s::jsonb[])
       AS x(tenant_id, run_id, from_status, to_status, final, output, error)
 WHERE r.tenant_id = x.tenant_id AND r.run_id = x.run_id
   AND r.status = coalesce(x.from_status, r.status);

-- name: transaction_now :one
-- The transaction's timestamp on the database clock (warden.now()): what every statement of
-- this transaction compares with.
SELECT warden.now() AS now;

-- name: run_lock_nowait :one
-- Locks a child run from its parent's scheduler pass, which holds the parent: a child's
-- own pass holds the child and then wakes the parent, so waiting here could close a
-- cycle. NOWAIT: a child being scheduled right now fails the parent's pass (retried).
SELECT * FROM warden.runs
 WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
   FOR NO KEY UPDATE NOWAIT;

-- name: runs_latest_children_of_runs :many
-- The newest child (highest parent_attempt) of each workflow step and item of these
-- runs, along runs_one_child_per_attempt: a scheduler pass maps their statuses onto
-- their steps and items.
SELECT DISTINCT ON (c.tenant_id, c.parent_run_id, c.parent_step_id,
                    coalesce(c.parent_item_index, -1)) c.*
  FROM warden.runs c
  JOIN unnest(%(tenant_ids)s::text[], %(run_ids)s::uuid[]) AS k(tenant_id, run_id)
    ON c.tenant_id = k.tenant_id AND c.parent_run_id = k.run_id
 ORDER BY c.tenant_id, c.parent_run_id, c.parent_step_id, coalesce(c.parent_item_index, -1),
          c.parent_attempt DESC;

-- name: runs_children_of_run :many
-- Every child run of a run, oldest first (the run document links them; cancel ends the
-- open ones).
SELECT * FROM warden.runs
 WHERE tenant_id = %(tenant_id)s AND parent_run_id = %(run_id)s
   AND parent_run_id IS NOT NULL
 ORDER BY created_at, parent_step_id, parent_item_index, parent_attempt, run_id;

-- name: run_wake_parent :exec
-- Flags the parent of a child run that ended, always taking the parent's row lock (no
-- "AND NOT needs_scheduling" shortcut): a parent's scheduler pass that reads its children
-- holds that lock, so this waits for it to commit and flags the parent again after it,
-- or the pass waits for this one (SKIP LOCKED) and then sees the child ended. With the
-- shortcut, a parent already flagged could be taken by a pass that reads the child before
-- this transaction commits, and then clear the flag: a lost wake-up.
WITH woken AS (
    UPDATE warden.runs SET needs_scheduling = true
     WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s
    RETURNING run_id
)
SELECT pg_notify('warden_scheduler', '') FROM woken;

-- name: runs_insert_many :many
-- Creates a batch of runs in one statement (engine.runs.lifecycle.start_many), from
-- parallel arrays, the run ids chosen by the caller so each row maps back to its item. A
-- run whose idempotency key is already used for its workflow (by an earlier run, or by
-- an earlier item of this batch) gets no row back: runs_idempotency decides, as for one
-- start. The rows go in key order, so two batches that share keys wait on each other's
-- unique-index entries in one order and cannot deadlock.
INSERT INTO warden.runs
    (tenant_id, run_id, workflow_id, workflow_version, input, idempotency_key,
     request_digest, created_by, deadline_at, priority, pins, created_at)
SELECT %(tenant_id)s, x.run_id, %(workflow_id)s, x.version, x.input, x.idempotency_key,
       x.digest, %(created_by)s,
       warden.now() + make_interval(secs => x.timeout_ms::bigint / 1000.0),
       x.priority, x.pins,
       -- the database clock, as run_insert: created_at picks the partition of the run's
       -- events (sql/schema/50_timeline.sql)
       warden.now()
  FROM unnest(%(run_ids)s::uuid[], %(versions)s::text[], %(inputs)s::jsonb[],
              %(idempotency_keys)s::text[], %(digests)s::text[], %(timeout_ms)s::bigint[],
              %(priorities)s::smallint[], %(pins)s::jsonb[])
       WITH ORDINALITY AS x(run_id, version, input, idempotency_key, digest, timeout_ms,
                            priority, pins, n)
 ORDER BY x.idempotency_key NULLS LAST, x.n
ON CONFLICT ON CONSTRAINT runs_idempotency DO NOTHING
RETURNING *;

-- name: runs_by_idempotency_keys :many
-- The runs some idempotency keys already created for one workflow.
SELECT * FROM warden.runs
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s
   AND idempotency_key = ANY (%(idempotency_keys)s::text[]);

-- name: scheduler_notify :exec
-- Wakes the schedulers once (runs are inserted already flagged needs_scheduling; the
-- NOTIFY is folded into one per transaction by PostgreSQL anyway).
SELECT pg_notify('warden_scheduler', '');

-- name: runs_start_planned :one
-- One run started, judged and dispatched in one call where a start plan covers it
-- (sql/functions/start_planned_run.sql); no row: nothing was written, start it the long way.
SELECT * FROM warden.start_planned_run(
    %(tenant_id)s, %(workflow_id)s, %(version)s, %(run_id)s, %(input)s, %(idempotency_key)s,
    %(digest)s, %(priority)s::smallint, %(created_by)s, %(started_by_event)s);
