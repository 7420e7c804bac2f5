"""Retention that keeps the proof: the timeline and policy_decisions partitioned by month
of their run's creation; warden.archived_runs; the owner's retention functions.

Revision ID: 0007_retention_partitions
Revises: 0006_keyed_chain
Create Date: 2026-12-06

Frozen. Moves warden.timeline and warden.policy_decisions to tables partitioned by RANGE
of run_created_at (the run's created_at, which append_events copies onto each event and
the foreign key policy_decisions_run_partition checks on each decision), with monthly
partitions in schema warden_partitions (no USAGE for anyone but the owner); copies their
rows. Adds runs_partition_key, warden.create_partitions, warden.ensure_partitions (granted
to the engine), the runs' insert trigger runs_partitions_ready, warden.archived_runs, and
the owner-only warden.retention_partitions and warden.retention_drop (docs/dba.md,
"Partitions and retention").
"""

from alembic import op

revision = "0007_retention_partitions"
down_revision = "0006_keyed_chain"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- the schema of the partitions is created by the migrating role (the owner may not create
-- schemas in the database) and given to the owner
RESET ROLE;
-- Partitions and retention (docs/dba.md, "Partitions and retention").
--
-- The monthly partitions of the timeline and of policy_decisions live in a schema of
-- their own, on which no role but the owner has USAGE: rows are read and written through
-- the partitioned parents in schema warden, whose privileges and row-level security
-- apply, and no grant on the parents' schema (GRANT ... ON ALL TABLES IN SCHEMA warden)
-- can reach a partition and let a session read around the tenant policies.
CREATE SCHEMA warden_partitions;
ALTER SCHEMA warden_partitions OWNER TO warden_owner;
SET LOCAL ROLE warden_owner;

ALTER TABLE warden.runs ADD CONSTRAINT runs_partition_key UNIQUE (tenant_id, run_id, created_at);
-- Creates the month's partitions of the timeline and of policy_decisions (the month, in
-- UTC, that holds p_at) if they do not exist yet; returns how many it created. Owner only
-- (no grant): warden.ensure_partitions and the runs' insert trigger call it.
--
-- Partition names carry the month (warden_partitions.timeline_y2026m12) so retention and
-- a DBA can read the range off the name; the bounds are UTC month starts. A transaction
-- advisory lock serializes concurrent creators, which then see each other's table. The
-- partitions get the parents' indexes, constraints and row triggers from PostgreSQL; a
-- statement trigger is not cloned, so each partition gets its own TRUNCATE refusal.
CREATE OR REPLACE FUNCTION warden.create_partitions(p_at timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_from    timestamptz := date_trunc('month', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_to      timestamptz := (date_trunc('month', p_at AT TIME ZONE 'UTC') + interval '1 month')
                             AT TIME ZONE 'UTC';
    v_suffix  text := to_char(p_at AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
    v_table   text;
    v_created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('warden.create_partitions'));
    FOREACH v_table IN ARRAY ARRAY['timeline', 'policy_decisions'] LOOP
        CONTINUE WHEN to_regclass(format('warden_partitions.%I', v_table || '_' || v_suffix))
                      IS NOT NULL;
        EXECUTE format('CREATE TABLE warden_partitions.%I PARTITION OF warden.%I '
                       'FOR VALUES FROM (%L) TO (%L)',
                       v_table || '_' || v_suffix, v_table, v_from, v_to);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON warden_partitions.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change()',
                       v_table || '_no_truncate', v_table || '_' || v_suffix);
        v_created := v_created + 1;
    END LOOP;
    RETURN v_created;
END $$;
REVOKE EXECUTE ON FUNCTION warden.create_partitions(timestamptz) FROM PUBLIC;
-- Creates the partitions of this month and of the next p_months_ahead months (UTC, by
-- the database clock warden.now()) where missing; returns how many it created. `warden
-- migrate` and `warden serve` (hourly) call it, so a run's partition exists before the run
-- does; the runs' insert trigger (warden.run_partitions_ready) creates one on demand should
-- it not. Granted to the engine: it only ever adds empty partitions for the months ahead,
-- at most two years, and drops nothing.
CREATE OR REPLACE FUNCTION warden.ensure_partitions(p_months_ahead integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_created integer := 0;
BEGIN
    IF p_months_ahead IS NULL OR p_months_ahead NOT BETWEEN 0 AND 24 THEN
        RAISE EXCEPTION 'months ahead must be 0 to 24, not %', p_months_ahead
            USING ERRCODE = 'WD422';
    END IF;
    FOR i IN 0 .. p_months_ahead LOOP
        v_created := v_created + warden.create_partitions(
            (date_trunc('month', warden.now() AT TIME ZONE 'UTC') + make_interval(months => i))
            AT TIME ZONE 'UTC');
    END LOOP;
    RETURN v_created;
END $$;
REVOKE EXECUTE ON FUNCTION warden.ensure_partitions(integer) FROM PUBLIC;
-- BEFORE INSERT on warden.runs: the partitions the run's events and decisions will go to
-- (by its created_at) exist before the run does. Normally warden.ensure_partitions made
-- them months ahead and this is one catalog lookup; if not (serve was down for months, or
-- a run is created with an old created_at), they are made here, in the inserting
-- transaction, instead of the run's first event failing for want of a partition.
CREATE OR REPLACE FUNCTION warden.run_partitions_ready() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF to_regclass('warden_partitions.policy_decisions_'
                   || to_char(NEW.created_at AT TIME ZONE 'UTC', '"y"YYYY"m"MM')) IS NULL THEN
        PERFORM warden.create_partitions(NEW.created_at);
    END IF;
    RETURN NEW;
END $$;
REVOKE EXECUTE ON FUNCTION warden.run_partitions_ready() FROM PUBLIC;
-- The timeline's partitions as retention sees them, oldest first: each month's runs, how
-- many are still open, finished at or after p_cutoff, or still needed by something open
-- (a notification not yet delivered or given up, or an open rerun whose chain of
-- rerun_of reaches the run: its approvals bar that run's starter, sql/triggers/
-- approvals.sql), and whether the partition may be archived and dropped. A partition may
-- be only when its whole month ends by the cutoff and the cutoff is at least a day old
-- (no run can be created in it any more: created_at is warden.now() at the insert), and
-- none of its runs is open, recent or needed. Owner only (no grant); one pass over runs.
CREATE OR REPLACE FUNCTION warden.retention_partitions(p_cutoff timestamptz)
RETURNS TABLE (month_start timestamptz, month_end timestamptz, runs bigint, open_runs bigint,
               recent_runs bigint, needed_runs bigint, droppable boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE parts AS (
        SELECT make_timestamptz(substr(c.relname, 11, 4)::integer,
                                substr(c.relname, 16, 2)::integer, 1, 0, 0, 0, 'UTC') AS m
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'warden.timeline'::regclass
    ), held (tenant_id, run_id) AS (
        SELECT r.tenant_id, r.rerun_of FROM warden.runs r
         WHERE r.finished_at IS NULL AND r.rerun_of IS NOT NULL
        UNION
        SELECT r.tenant_id, r.rerun_of
          FROM held h JOIN warden.runs r ON r.tenant_id = h.tenant_id AND r.run_id = h.run_id
         WHERE r.rerun_of IS NOT NULL
    ), stats AS (
        SELECT date_trunc('month', r.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m,
               count(*) AS runs,
               count(*) FILTER (WHERE r.finished_at IS NULL) AS open_runs,
               count(*) FILTER (WHERE r.finished_at >= p_cutoff) AS recent_runs,
               count(*) FILTER (WHERE r.finished_at < p_cutoff AND (
                   EXISTS (SELECT 1 FROM held h
                            WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
                   OR EXISTS (SELECT 1 FROM warden.notifications n
                               WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                                 AND n.status IN ('pending', 'delivering')))) AS needed_runs
          FROM warden.runs r
         GROUP BY 1
    )
    SELECT p.m, (p.m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC',
           coalesce(s.runs, 0), coalesce(s.open_runs, 0), coalesce(s.recent_runs, 0),
           coalesce(s.needed_runs, 0),
           (p.m AT TIME ZONE 'UTC' + interval '1 month') AT TIME ZONE 'UTC' <= p_cutoff
           AND p_cutoff <= warden.now() - interval '1 day'
           AND coalesce(s.open_runs, 0) = 0 AND coalesce(s.recent_runs, 0) = 0
           AND coalesce(s.needed_runs, 0) = 0
      FROM parts p LEFT JOIN stats s ON s.m = p.m
     ORDER BY p.m
$$;
REVOKE EXECUTE ON FUNCTION warden.retention_partitions(timestamptz) FROM PUBLIC;
-- Drops one month's partitions of the timeline and of policy_decisions after `warden
-- retention` exported and verified their runs (docs/dba.md, "Partitions and retention"),
-- and removes those runs' mutable rows, in one transaction; returns the runs archived.
-- p_runs: the exported runs' heads, [{tenant_id, run_id, seq, hash}]; p_archive and
-- p_sha256: the archive file's name and digest, kept in warden.archived_runs.
--
-- Not SECURITY DEFINER and granted to no one: only the schema owner (a login that is a
-- member of warden_owner) may detach and drop a partition, so no engine, worker or
-- auditor session can get here. No row of an append-only table is deleted and no
-- trigger is disabled: the partitions go whole. Both parents are locked first (ACCESS
-- EXCLUSIVE, as DETACH takes anyway; appends wait for the rest of this transaction, and
-- lock_timeout gives up rather than queue behind a long transaction), so the checks below
-- see every run of the month as it will be dropped: exactly the runs exported, each
-- finished before the cutoff with the head exported, none still needed by an open rerun or
-- an undelivered notification. The mutable rows go by set-based DELETEs keyed by those
-- runs (index lookups), children first: notifications, approvals, jobs, steps, runs.
CREATE OR REPLACE FUNCTION warden.retention_drop(
    p_month timestamptz, p_cutoff timestamptz, p_runs jsonb, p_archive text, p_sha256 text,
    p_by text
) RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s' AS $$
DECLARE
    v_from   timestamptz := date_trunc('month', p_month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_to     timestamptz := (date_trunc('month', p_month AT TIME ZONE 'UTC')
                             + interval '1 month') AT TIME ZONE 'UTC';
    v_suffix text := to_char(p_month AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
    v_bad    record;
    v_table  text;
    v_count  integer;
BEGIN
    IF p_cutoff > warden.now() - interval '1 day' THEN
        RAISE EXCEPTION 'the cutoff % is less than a day old', p_cutoff USING ERRCODE = 'WD422';
    END IF;
    IF v_to > p_cutoff THEN
        RAISE EXCEPTION 'partition % ends after the cutoff %', v_suffix, p_cutoff
            USING ERRCODE = 'WD422';
    END IF;
    IF to_regclass('warden_partitions.timeline_' || v_suffix) IS NULL THEN
        RAISE EXCEPTION 'no partition %', v_suffix USING ERRCODE = 'WD404';
    END IF;
    LOCK TABLE warden.timeline, warden.policy_decisions IN ACCESS EXCLUSIVE MODE;
    PERFORM 1 FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to
        FOR UPDATE;
    WITH RECURSIVE held (tenant_id, run_id) AS (
        SELECT r.tenant_id, r.rerun_of FROM warden.runs r
         WHERE r.finished_at IS NULL AND r.rerun_of IS NOT NULL
        UNION
        SELECT r.tenant_id, r.rerun_of
          FROM held h JOIN warden.runs r ON r.tenant_id = h.tenant_id AND r.run_id = h.run_id
         WHERE r.rerun_of IS NOT NULL
    ), month_runs AS (
        SELECT * FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to
    )
    SELECT coalesce(r.tenant_id, x.tenant_id) AS tenant_id,
           coalesce(r.run_id, x.run_id) AS run_id,
           CASE WHEN r.run_id IS NULL THEN 'exported, but not a run of this partition'
                WHEN x.run_id IS NULL THEN 'a run of this partition the export lacks'
                WHEN r.finished_at IS NULL OR r.finished_at >= p_cutoff
                    THEN 'not finished before the cutoff'
                WHEN r.timeline_seq <> x.seq OR r.timeline_hash <> x.hash
                    THEN 'its timeline moved on since the export'
                WHEN EXISTS (SELECT 1 FROM held h
                              WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
                    THEN 'an open rerun reaches it'
                WHEN EXISTS (SELECT 1 FROM warden.notifications n
                              WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                                AND n.status IN ('pending', 'delivering'))
                    THEN 'a notification is still being delivered'
           END AS problem
      INTO v_bad
      FROM month_runs r
      FULL JOIN jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid, seq bigint,
                                                hash text)
        ON x.tenant_id = r.tenant_id AND x.run_id = r.run_id
     WHERE r.run_id IS NULL OR x.run_id IS NULL OR r.finished_at IS NULL
        OR r.finished_at >= p_cutoff OR r.timeline_seq <> x.seq OR r.timeline_hash <> x.hash
        OR EXISTS (SELECT 1 FROM held h WHERE h.tenant_id = r.tenant_id AND h.run_id = r.run_id)
        OR EXISTS (SELECT 1 FROM warden.notifications n
                    WHERE n.tenant_id = r.tenant_id AND n.run_id = r.run_id
                      AND n.status IN ('pending', 'delivering'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % (%): %; partition % kept', v_bad.run_id, v_bad.tenant_id,
            v_bad.problem, v_suffix USING ERRCODE = 'WD409';
    END IF;

    INSERT INTO warden.archived_runs (tenant_id, run_id, workflow_id, status, created_by,
                                      rerun_of, created_at, finished_at, timeline_seq,
                                      timeline_hash, archive, archive_sha256, archived_by)
    SELECT r.tenant_id, r.run_id, r.workflow_id, r.status, r.created_by, r.rerun_of,
           r.created_at, r.finished_at, r.timeline_seq, r.timeline_hash, p_archive, p_sha256,
           p_by
      FROM warden.runs r WHERE r.created_at >= v_from AND r.created_at < v_to;
    GET DIAGNOSTICS v_count = ROW_COUNT;

    FOREACH v_table IN ARRAY ARRAY['timeline', 'policy_decisions'] LOOP
        EXECUTE format('ALTER TABLE warden.%I DETACH PARTITION warden_partitions.%I',
                       v_table, v_table || '_' || v_suffix);
        EXECUTE format('DROP TABLE warden_partitions.%I', v_table || '_' || v_suffix);
    END LOOP;

    DELETE FROM warden.notifications n
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE n.tenant_id = x.tenant_id AND n.run_id = x.run_id;
    DELETE FROM warden.approvals a
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE a.tenant_id = x.tenant_id AND a.run_id = x.run_id;
    DELETE FROM warden.jobs j
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE j.tenant_id = x.tenant_id AND j.run_id = x.run_id;
    DELETE FROM warden.steps s
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE s.tenant_id = x.tenant_id AND s.run_id = x.run_id;
    DELETE FROM warden.runs r
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE r.tenant_id = x.tenant_id AND r.run_id = x.run_id;
    RETURN v_count;
END $$;
REVOKE EXECUTE ON FUNCTION warden.retention_drop(timestamptz, timestamptz, jsonb, text, text,
                                                 text) FROM PUBLIC;
-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
--
-- Each hash is HMAC-SHA-256 under the active chain key (sql/schema/55_chain_keys.sql),
-- inlined as two sha256 calls. SECURITY DEFINER to read the key; it signs only events it
-- appends itself, at the run's next seq after the head, so a caller gets no MAC of a row
-- it could put anywhere else (an existing (run, seq) is refused by the primary key).
-- Each event takes the run's created_at as run_created_at, the timeline's partition key:
-- this function is the only writer, so a run's events all sit in the run's partition.
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
    v_key  integer;
    v_ipad bytea;
    v_opad bytea;
    v_created timestamptz;
BEGIN
    SELECT timeline_seq, timeline_hash, created_at INTO v_seq, v_prev, v_created
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id',
                      e->>'job_id', (e->>'attempt')::integer, e->>'actor',
                      coalesce(e->'data', '{}')))), 'hex');
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash, key_id,
                                     run_created_at)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash, v_key, v_created);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- As SECURITY DEFINER it would let any role append to any run: only the roles that write
-- runs may (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) FROM PUBLIC;
-- Before an approval is stored (sql/triggers/approvals.sql): requested_by must be whoever
-- started its run, and barred becomes every principal that started a run of the rerun
-- chain (the run, the run it reruns, and so on back to the original), together with any
-- names the inserter passed. An inserter can bar more principals, never fewer. The
-- constraint approvals_no_rerun_chain_approval then refuses a decision by any of them.
CREATE OR REPLACE FUNCTION warden.approval_bar_rerun_chain() RETURNS trigger
-- as the owner: row-level security must never hide an ancestor run from the walk below
-- (the inserting engine session is scoped to one tenant, but a smaller `barred` would let
-- a starter decide)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    starter text;
    starters text[];
BEGIN
    SELECT created_by INTO starter FROM warden.runs
     WHERE tenant_id = NEW.tenant_id AND run_id = NEW.run_id;
    IF NOT FOUND THEN
        RETURN NEW;  -- no such run: the foreign key to its step refuses the row
    END IF;
    IF NEW.requested_by IS DISTINCT FROM starter THEN
        RAISE EXCEPTION 'an approval of run % is requested by %, who started it, not by %',
            NEW.run_id, starter, NEW.requested_by USING ERRCODE = 'WD010';
    END IF;
    -- UNION, not UNION ALL: were rerun_of ever to form a cycle, the walk ends instead of
    -- looping. A rerun is always of the same tenant. An ancestor that retention archived
    -- (warden.archived_runs keeps its starter and rerun_of) still bars its starter.
    WITH RECURSIVE chain (run_id, rerun_of, created_by) AS (
        SELECT r.run_id, r.rerun_of, r.created_by FROM warden.runs r
         WHERE r.tenant_id = NEW.tenant_id AND r.run_id = NEW.run_id
        UNION
        SELECT r.run_id, r.rerun_of, r.created_by
          FROM chain c
          JOIN (SELECT a.tenant_id, a.run_id, a.rerun_of, a.created_by FROM warden.runs a
                UNION ALL
                SELECT a.tenant_id, a.run_id, a.rerun_of, a.created_by
                  FROM warden.archived_runs a) AS r
            ON r.tenant_id = NEW.tenant_id AND r.run_id = c.rerun_of
    )
    SELECT array_agg(DISTINCT p ORDER BY p) INTO starters
      FROM (SELECT created_by FROM chain
            UNION ALL SELECT unnest(coalesce(NEW.barred, '{}'))) AS named (p)
     WHERE p IS NOT NULL;
    NEW.barred := starters;
    RETURN NEW;
END $$;
-- The trigger function of every append-only table (sql/triggers/append_only.sql): the
-- timeline, policy decisions and activations, the content-addressed snapshots and the
-- archived runs. A partition (sql/schema/50_timeline.sql) is named by its parent table.
CREATE OR REPLACE FUNCTION warden.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.% is append-only: % refused',
        (SELECT c.relname FROM pg_catalog.pg_class c
          WHERE c.oid = coalesce(pg_catalog.pg_partition_root(TG_RELID), TG_RELID)), TG_OP
        USING ERRCODE = 'WD010';
END $$;

-- the views on the two tables are made again on the partitioned ones
DROP VIEW warden.job_evidence;
DROP VIEW warden.approval_evidence;
DROP VIEW warden.timeline_check;

-- the unpartitioned tables step aside (with their indexes, identity sequence, triggers and
-- policies) until their rows are copied
ALTER TABLE warden.timeline SET SCHEMA warden_partitions;
ALTER TABLE warden_partitions.timeline RENAME TO timeline_before_0007;
ALTER TABLE warden.policy_decisions SET SCHEMA warden_partitions;
ALTER TABLE warden_partitions.policy_decisions RENAME TO policy_decisions_before_0007;

-- The append-only, hash-chained history of every run (docs/dba.md). seq is gapless per
-- run and assigned under the run's row lock, so it follows commit order; each event's
-- hash is an HMAC-SHA-256, under the chain key key_id (sql/schema/55_chain_keys.sql), of
-- the previous hash and the event (warden.event_message). UPDATE, DELETE and TRUNCATE are
-- refused by triggers (sql/triggers/append_only.sql) and by privileges.
--
-- Partitioned by month of the *run's* creation (run_created_at, copied from runs.created_at
-- by warden.append_events, the only writer): all of a run's events sit in one partition,
-- so retention drops whole runs and never deletes a row (docs/dba.md, "Partitions and
-- retention"). No role but the owner may insert here, and no role but the owner may change
-- runs.created_at, so (tenant_id, run_id) determines run_created_at and the primary key,
-- which must hold the partition key, still makes (tenant_id, run_id, seq) unique.
CREATE TABLE warden.timeline (
    tenant_id  text                 NOT NULL,
    run_id     uuid                 NOT NULL,
    seq        bigint               NOT NULL CHECK (seq >= 1),
    at         timestamptz          NOT NULL,
    kind       warden.timeline_kind NOT NULL,
    step_id    text,
    job_id     text,
    attempt    integer,
    actor      text,
    data       jsonb                NOT NULL DEFAULT '{}',
    prev_hash  text                 NOT NULL,
    hash       text                 NOT NULL,
    -- the chain key that signed this event (warden.chain_keys; kept after a rotation)
    key_id     integer              NOT NULL,
    -- the run's created_at: the partition key (monthly partitions, warden.create_partitions)
    run_created_at timestamptz      NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq, run_created_at)
) PARTITION BY RANGE (run_created_at);
CREATE INDEX timeline_by_job ON warden.timeline (tenant_id, job_id) WHERE job_id IS NOT NULL;
CREATE INDEX timeline_by_time ON warden.timeline (at);
REVOKE UPDATE, DELETE, TRUNCATE ON warden.timeline FROM PUBLIC;

-- Every decision at every gate. snapshot_hash NULL: no snapshot was active and the
-- configured default decided (recorded in reason). Partitioned by month of its run's
-- creation, like the timeline (sql/schema/50_timeline.sql): the engine writes these rows
-- itself, so the foreign key on (tenant_id, run_id, run_created_at) is what keeps a
-- decision in its run's partition (a decision filed under another month would be dropped
-- with runs it does not belong to, or outlive its own).
CREATE TABLE warden.policy_decisions (
    tenant_id      text                   NOT NULL,
    decision_id    bigint                 GENERATED ALWAYS AS IDENTITY,
    stage          warden.policy_stage    NOT NULL,
    snapshot_hash  text,
    rule           text,
    decision       warden.policy_decision NOT NULL,
    reason         text                   NOT NULL,
    constraints    jsonb                  NOT NULL DEFAULT '{}',
    run_id         uuid                   NOT NULL,
    step_id        text                   NOT NULL,
    job_id         text,
    at             timestamptz            NOT NULL DEFAULT now(),
    -- the run's created_at: the partition key (monthly partitions, warden.create_partitions)
    run_created_at timestamptz            NOT NULL,
    PRIMARY KEY (tenant_id, decision_id, run_created_at),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT policy_decisions_run_partition FOREIGN KEY (tenant_id, run_id, run_created_at)
        REFERENCES warden.runs (tenant_id, run_id, created_at),
    CONSTRAINT policy_decisions_job_at_dispatch CHECK ((job_id IS NOT NULL) = (stage = 'dispatch'))
) PARTITION BY RANGE (run_created_at);
CREATE INDEX policy_decisions_by_job ON warden.policy_decisions (tenant_id, job_id)
    WHERE job_id IS NOT NULL;
CREATE INDEX policy_decisions_by_run ON warden.policy_decisions (tenant_id, run_id, decision_id);

-- a partition for every month that has runs, and the three months ahead
SELECT warden.create_partitions(m)
  FROM generate_series(
      date_trunc('month', coalesce((SELECT min(created_at) FROM warden.runs), now())
                          AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
      now(), interval '1 month') AS m;
SELECT warden.ensure_partitions(3);

INSERT INTO warden.timeline
    (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data,
    prev_hash, hash, key_id, run_created_at)
SELECT t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id, t.job_id,
       t.attempt, t.actor, t.data, t.prev_hash, t.hash, t.key_id, r.created_at
  FROM warden_partitions.timeline_before_0007 t
  JOIN warden.runs r ON r.tenant_id = t.tenant_id AND r.run_id = t.run_id;
INSERT INTO warden.policy_decisions
    (tenant_id, decision_id, stage, snapshot_hash, rule, decision, reason,
    constraints, run_id, step_id, job_id, at, run_created_at) OVERRIDING SYSTEM VALUE
SELECT d.tenant_id, d.decision_id, d.stage, d.snapshot_hash, d.rule, d.decision, d.reason,
       d.constraints, d.run_id, d.step_id, d.job_id, d.at, r.created_at
  FROM warden_partitions.policy_decisions_before_0007 d
  JOIN warden.runs r ON r.tenant_id = d.tenant_id AND r.run_id = d.run_id;
SELECT setval(pg_get_serial_sequence('warden.policy_decisions', 'decision_id'),
              coalesce((SELECT max(decision_id) FROM warden.policy_decisions), 0) + 1, false);
DROP TABLE warden_partitions.timeline_before_0007;
DROP TABLE warden_partitions.policy_decisions_before_0007;

CREATE OR REPLACE TRIGGER timeline_no_update_delete BEFORE UPDATE OR DELETE ON warden.timeline
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON warden.timeline
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_decisions_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_decisions
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_append_only_no_truncate BEFORE TRUNCATE ON warden.policy_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();

-- The runs retention archived: what `warden audit verify` names as archived rather than
-- missing. Written only by warden.retention_drop (owner), in the transaction that drops
-- the runs' partitions; the retention anchor outside the database says the same, signed
-- (engine/runs/anchors.py), so an owner who adds or edits a row here is caught by a verify
-- with the anchors. Append-only (sql/triggers/append_only.sql).
CREATE TABLE warden.archived_runs (
    tenant_id       text        NOT NULL,
    run_id          uuid        NOT NULL,
    workflow_id     text        NOT NULL,
    status          warden.run_status NOT NULL,
    created_by      text        NOT NULL,
    rerun_of        uuid,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    -- the chain head the run had when it was exported and dropped
    timeline_seq    bigint      NOT NULL,
    timeline_hash   text        NOT NULL,
    -- the archive file (its name, as written in the archive directory) and its sha256
    archive         text        NOT NULL,
    archive_sha256  text        NOT NULL CHECK (archive_sha256 ~ '^[0-9a-f]{64}$'),
    archived_by     text        NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id)
);
REVOKE UPDATE, DELETE, TRUNCATE ON warden.archived_runs FROM PUBLIC;

CREATE OR REPLACE TRIGGER archived_runs_append_only BEFORE UPDATE OR DELETE ON warden.archived_runs
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER archived_runs_no_truncate BEFORE TRUNCATE ON warden.archived_runs
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
-- A run's partitions exist before the run does (sql/functions/run_partitions_ready.sql).
CREATE OR REPLACE TRIGGER runs_partitions_ready BEFORE INSERT ON warden.runs
    FOR EACH ROW EXECUTE FUNCTION warden.run_partitions_ready();

-- Every timeline event with what is wrong with it, if anything (problem IS NULL: it
-- holds): seq gapless from 1, prev_hash links to the previous event's hash, and hash
-- recomputes as the HMAC under the key that signed it. The window is partitioned by run,
-- so a WHERE on tenant_id and run_id is pushed down to the primary key. Owner only (it
-- reads the chain keys); others ask warden.timeline_problems or warden.verify_timeline.
CREATE OR REPLACE VIEW warden.timeline_check AS
SELECT t.tenant_id, t.run_id, t.seq, t.key_id, t.hash,
       CASE
           WHEN t.seq <> row_number() OVER w
               THEN 'seq ' || t.seq || ' found where ' || row_number() OVER w
                    || ' was expected (an event is missing)'
           WHEN t.prev_hash <> coalesce(lag(t.hash) OVER w, repeat('0', 64))
               THEN 'prev_hash does not link to the previous event''s hash'
           WHEN k.key_id IS NULL
               THEN 'signed with key ' || t.key_id || ', which does not exist'
           WHEN t.hash <> encode(sha256(k.k_opad || sha256(k.k_ipad || warden.event_message(
                    t.prev_hash, t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id,
                    t.job_id, t.attempt, t.actor, t.data))), 'hex')
               THEN 'hash does not match the event under key ' || t.key_id
                    || ' (the event was changed, or not signed with the chain key)'
       END AS problem
  FROM warden.timeline t
  LEFT JOIN warden.chain_keys k ON k.key_id = t.key_id
WINDOW w AS (PARTITION BY t.tenant_id, t.run_id ORDER BY t.seq);
REVOKE ALL ON warden.timeline_check FROM PUBLIC;
-- One row per approval, with its full context (docs/dba.md, "Evidence views"): the run
-- and who started it, who asked and who decided, when and why, the policy snapshot it is
-- bound to and who activated that snapshot, the job hash approved and the hash of what is
-- stored now (job_hash_matches: what ran, or will run, is what was approved), and the
-- timeline seqs of its request and its decision. Read it by (tenant_id, run_id) or
-- (tenant_id, requested_at); every lookup below is by a primary key or an index.
CREATE OR REPLACE VIEW warden.approval_evidence AS
SELECT a.tenant_id, a.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, a.approval_id, a.step_id, a.job_id, a.kind, a.status,
       a.requested_by, a.requested_at, a.expires_at, a.decided_by, a.decided_at, a.reason,
       a.policy_snapshot_hash, act.activated_by AS policy_activated_by,
       act.activated_at AS policy_activated_at,
       a.job_hash AS approved_job_hash, now_hash.job_hash AS current_job_hash,
       a.job_hash = now_hash.job_hash AS job_hash_matches,
       seqs.requested_seq, seqs.decided_seq
  FROM warden.approvals a
  JOIN warden.runs r ON r.tenant_id = a.tenant_id AND r.run_id = a.run_id
  -- the activation that made the bound snapshot active, the last one before the request
  LEFT JOIN LATERAL (
      SELECT pa.activated_by, pa.activated_at FROM warden.policy_activations pa
       WHERE pa.tenant_id = a.tenant_id AND pa.snapshot_hash = a.policy_snapshot_hash
         AND pa.activated_at <= a.requested_at
       ORDER BY pa.activation_id DESC LIMIT 1) act ON true
  -- the hash of what is stored now, computed as the approval's was: a policy approval is
  -- bound to its job row; a step approval to the run input and its dependencies' outputs
  LEFT JOIN LATERAL (
      SELECT CASE WHEN a.kind = 'policy' THEN (
                 SELECT warden.job_hash(j.tenant_id, j.run_id, j.step_id, j.topic, j.input,
                                        j.upstream, j.constraints)
                   FROM warden.jobs j WHERE j.tenant_id = a.tenant_id AND j.job_id = a.job_id)
             ELSE (
                 SELECT warden.job_hash(a.tenant_id, a.run_id, a.step_id, NULL, r.input,
                                        coalesce(jsonb_object_agg(d.step_id, d.output), '{}'),
                                        '{}')
                   FROM warden.steps s
                   JOIN warden.steps d ON d.tenant_id = s.tenant_id AND d.run_id = s.run_id
                                      AND d.step_id = ANY (s.depends_on)
                  WHERE s.tenant_id = a.tenant_id AND s.run_id = a.run_id
                    AND s.step_id = a.step_id)
             END AS job_hash) now_hash ON true
  LEFT JOIN LATERAL (
      SELECT min(t.seq) FILTER (WHERE t.kind = 'approval.requested') AS requested_seq,
             min(t.seq) FILTER (WHERE t.kind <> 'approval.requested') AS decided_seq
        FROM warden.timeline t
       WHERE t.tenant_id = a.tenant_id AND t.run_id = a.run_id
         AND t.run_created_at = r.created_at
         AND t.kind IN ('approval.requested', 'approval.approved', 'approval.rejected',
                        'approval.expired', 'approval.superseded')
         AND t.data->>'approval_id' = a.approval_id::text) seqs ON true;
-- One row per job attempt (docs/dba.md, "Evidence views"): the run, the policy decisions
-- that let it run (the step's submit decision and every dispatch decision about this
-- attempt: stage, snapshot hash, rule, decision, reason, constraints), the approval that
-- released it (a policy approval of this attempt, else an approved approval step it
-- depends on: who, when, why, the job hash approved and whether it matches what ran), the
-- worker, the outcome and the seqs of its timeline events. Read it by (tenant_id, run_id),
-- (tenant_id, job_id) or (tenant_id, created_at). The timeline and decisions are read in
-- the run's partition alone (run_created_at = the run's created_at).
CREATE OR REPLACE VIEW warden.job_evidence AS
SELECT j.tenant_id, j.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, j.step_id, j.job_id, j.attempt, j.topic,
       j.status AS outcome, j.worker, j.created_at, j.started_at, j.finished_at, j.result,
       j.error, j.policy_snapshot_hash, j.constraints, d.decisions,
       ap.approval_id, ap.kind AS approval_kind, ap.decided_by AS approved_by,
       ap.decided_at AS approved_at, ap.reason AS approval_reason, ap.approved_job_hash,
       ap.policy_snapshot_hash AS approval_snapshot_hash,
       ap.job_hash_matches AS approval_matches_what_ran,
       tl.seqs AS timeline_seqs
  FROM warden.jobs j
  JOIN warden.runs r ON r.tenant_id = j.tenant_id AND r.run_id = j.run_id
  JOIN warden.steps s ON s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                     AND s.step_id = j.step_id
  LEFT JOIN LATERAL (
      SELECT jsonb_agg(jsonb_build_object(
                 'stage', pd.stage, 'snapshot_hash', pd.snapshot_hash, 'rule', pd.rule,
                 'decision', pd.decision, 'reason', pd.reason, 'constraints', pd.constraints,
                 'at', pd.at) ORDER BY pd.decision_id) AS decisions
        FROM warden.policy_decisions pd
       WHERE pd.tenant_id = j.tenant_id AND pd.run_id = j.run_id AND pd.step_id = j.step_id
         AND pd.run_created_at = r.created_at
         AND (pd.job_id = j.job_id OR pd.stage = 'submit')) d ON true
  LEFT JOIN LATERAL (
      SELECT ae.approval_id, ae.kind, ae.decided_by, ae.decided_at, ae.reason,
             ae.approved_job_hash, ae.policy_snapshot_hash, ae.job_hash_matches
        FROM warden.approval_evidence ae
       WHERE ae.tenant_id = j.tenant_id AND ae.run_id = j.run_id AND ae.status = 'approved'
         AND (ae.job_id = j.job_id OR (ae.kind = 'step' AND ae.step_id = ANY (s.depends_on)))
       ORDER BY ae.kind = 'policy' DESC, ae.decided_at DESC
       LIMIT 1) ap ON true
  LEFT JOIN LATERAL (
      SELECT array_agg(t.seq ORDER BY t.seq) AS seqs FROM warden.timeline t
       WHERE t.tenant_id = j.tenant_id AND t.job_id = j.job_id
         AND t.run_created_at = r.created_at) tl ON true;

GRANT SELECT ON warden.timeline, warden.policy_decisions TO warden_engine, warden_auditor;
GRANT INSERT ON warden.policy_decisions TO warden_engine;
GRANT SELECT ON warden.archived_runs TO warden_engine, warden_auditor;
GRANT EXECUTE ON FUNCTION warden.ensure_partitions(integer) TO warden_engine;
GRANT SELECT ON warden.job_evidence, warden.approval_evidence TO warden_engine, warden_auditor;
REVOKE ALL ON warden.timeline_check FROM PUBLIC;
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['timeline', 'policy_decisions', 'archived_runs'] LOOP
        EXECUTE format('ALTER TABLE warden.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY tenant_scope ON warden.%I TO warden_engine '
                       'USING (warden.in_scope(tenant_id)) '
                       'WITH CHECK (warden.in_scope(tenant_id))', v_table);
        EXECUTE format('DROP POLICY IF EXISTS audit_reads ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY audit_reads ON warden.%I FOR SELECT TO warden_auditor '
                       'USING (true)', v_table);
    END LOOP;
END $rls$;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
DROP VIEW warden.job_evidence;
DROP VIEW warden.approval_evidence;
DROP VIEW warden.timeline_check;
DROP TRIGGER runs_partitions_ready ON warden.runs;
DROP TABLE warden.archived_runs;

ALTER TABLE warden.timeline RENAME TO timeline_0007;
ALTER INDEX warden.timeline_by_job RENAME TO timeline_0007_by_job;
ALTER INDEX warden.timeline_by_time RENAME TO timeline_0007_by_time;
ALTER TABLE warden.timeline_0007 RENAME CONSTRAINT timeline_pkey TO timeline_0007_pkey;
ALTER TABLE warden.policy_decisions RENAME TO policy_decisions_0007;
ALTER INDEX warden.policy_decisions_by_job RENAME TO policy_decisions_0007_by_job;
ALTER INDEX warden.policy_decisions_by_run RENAME TO policy_decisions_0007_by_run;
ALTER TABLE warden.policy_decisions_0007 RENAME CONSTRAINT policy_decisions_pkey
    TO policy_decisions_0007_pkey;
ALTER TABLE warden.policy_decisions_0007 RENAME CONSTRAINT policy_decisions_job_at_dispatch
    TO policy_decisions_0007_job_at_dispatch;
ALTER SEQUENCE warden.policy_decisions_decision_id_seq RENAME TO policy_decisions_0007_seq;

-- The append-only, hash-chained history of every run (docs/dba.md). seq is gapless per
-- run and assigned under the run's row lock, so it follows commit order; each event's
-- hash is an HMAC-SHA-256, under the chain key key_id (sql/schema/55_chain_keys.sql), of
-- the previous hash and the event (warden.event_message). UPDATE, DELETE and TRUNCATE are
-- refused by triggers (sql/triggers/append_only.sql) and by privileges.
CREATE TABLE warden.timeline (
    tenant_id  text                 NOT NULL,
    run_id     uuid                 NOT NULL,
    seq        bigint               NOT NULL CHECK (seq >= 1),
    at         timestamptz          NOT NULL,
    kind       warden.timeline_kind NOT NULL,
    step_id    text,
    job_id     text,
    attempt    integer,
    actor      text,
    data       jsonb                NOT NULL DEFAULT '{}',
    prev_hash  text                 NOT NULL,
    hash       text                 NOT NULL,
    -- the chain key that signed this event (warden.chain_keys; kept after a rotation)
    key_id     integer              NOT NULL,
    PRIMARY KEY (tenant_id, run_id, seq)
);
CREATE INDEX timeline_by_job ON warden.timeline (tenant_id, job_id) WHERE job_id IS NOT NULL;
CREATE INDEX timeline_by_time ON warden.timeline (at);
REVOKE UPDATE, DELETE, TRUNCATE ON warden.timeline FROM PUBLIC;

-- Every decision at every gate. snapshot_hash NULL: no snapshot was active and the
-- configured default decided (recorded in reason).
CREATE TABLE warden.policy_decisions (
    tenant_id      text                   NOT NULL,
    decision_id    bigint                 GENERATED ALWAYS AS IDENTITY,
    stage          warden.policy_stage    NOT NULL,
    snapshot_hash  text,
    rule           text,
    decision       warden.policy_decision NOT NULL,
    reason         text                   NOT NULL,
    constraints    jsonb                  NOT NULL DEFAULT '{}',
    run_id         uuid                   NOT NULL,
    step_id        text                   NOT NULL,
    job_id         text,
    at             timestamptz            NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, decision_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT policy_decisions_job_at_dispatch CHECK ((job_id IS NOT NULL) = (stage = 'dispatch'))
);
CREATE INDEX policy_decisions_by_job ON warden.policy_decisions (tenant_id, job_id)
    WHERE job_id IS NOT NULL;
CREATE INDEX policy_decisions_by_run ON warden.policy_decisions (tenant_id, run_id, decision_id);

INSERT INTO warden.timeline
    (tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data,
    prev_hash, hash, key_id)
SELECT tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor, data,
    prev_hash, hash, key_id FROM warden.timeline_0007;
INSERT INTO warden.policy_decisions
    (tenant_id, decision_id, stage, snapshot_hash, rule, decision, reason,
    constraints, run_id, step_id, job_id, at) OVERRIDING SYSTEM VALUE
SELECT tenant_id, decision_id, stage, snapshot_hash, rule, decision, reason,
    constraints, run_id, step_id, job_id, at FROM warden.policy_decisions_0007;
SELECT setval(pg_get_serial_sequence('warden.policy_decisions', 'decision_id'),
              coalesce((SELECT max(decision_id) FROM warden.policy_decisions), 0) + 1, false);
DROP TABLE warden.timeline_0007;
DROP TABLE warden.policy_decisions_0007;
CREATE OR REPLACE TRIGGER timeline_no_update_delete BEFORE UPDATE OR DELETE ON warden.timeline
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON warden.timeline
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_decisions_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_decisions
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_append_only_no_truncate BEFORE TRUNCATE ON warden.policy_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();

-- Every timeline event with what is wrong with it, if anything (problem IS NULL: it
-- holds): seq gapless from 1, prev_hash links to the previous event's hash, and hash
-- recomputes as the HMAC under the key that signed it. The window is partitioned by run,
-- so a WHERE on tenant_id and run_id is pushed down to the primary key. Owner only (it
-- reads the chain keys); others ask warden.timeline_problems or warden.verify_timeline.
CREATE OR REPLACE VIEW warden.timeline_check AS
SELECT t.tenant_id, t.run_id, t.seq, t.key_id, t.hash,
       CASE
           WHEN t.seq <> row_number() OVER w
               THEN 'seq ' || t.seq || ' found where ' || row_number() OVER w
                    || ' was expected (an event is missing)'
           WHEN t.prev_hash <> coalesce(lag(t.hash) OVER w, repeat('0', 64))
               THEN 'prev_hash does not link to the previous event''s hash'
           WHEN k.key_id IS NULL
               THEN 'signed with key ' || t.key_id || ', which does not exist'
           WHEN t.hash <> encode(sha256(k.k_opad || sha256(k.k_ipad || warden.event_message(
                    t.prev_hash, t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id,
                    t.job_id, t.attempt, t.actor, t.data))), 'hex')
               THEN 'hash does not match the event under key ' || t.key_id
                    || ' (the event was changed, or not signed with the chain key)'
       END AS problem
  FROM warden.timeline t
  LEFT JOIN warden.chain_keys k ON k.key_id = t.key_id
WINDOW w AS (PARTITION BY t.tenant_id, t.run_id ORDER BY t.seq);
REVOKE ALL ON warden.timeline_check FROM PUBLIC;
-- One row per approval, with its full context (docs/dba.md, "Evidence views"): the run
-- and who started it, who asked and who decided, when and why, the policy snapshot it is
-- bound to and who activated that snapshot, the job hash approved and the hash of what is
-- stored now (job_hash_matches: what ran, or will run, is what was approved), and the
-- timeline seqs of its request and its decision. Read it by (tenant_id, run_id) or
-- (tenant_id, requested_at); every lookup below is by a primary key or an index.
CREATE OR REPLACE VIEW warden.approval_evidence AS
SELECT a.tenant_id, a.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, a.approval_id, a.step_id, a.job_id, a.kind, a.status,
       a.requested_by, a.requested_at, a.expires_at, a.decided_by, a.decided_at, a.reason,
       a.policy_snapshot_hash, act.activated_by AS policy_activated_by,
       act.activated_at AS policy_activated_at,
       a.job_hash AS approved_job_hash, now_hash.job_hash AS current_job_hash,
       a.job_hash = now_hash.job_hash AS job_hash_matches,
       seqs.requested_seq, seqs.decided_seq
  FROM warden.approvals a
  JOIN warden.runs r ON r.tenant_id = a.tenant_id AND r.run_id = a.run_id
  -- the activation that made the bound snapshot active, the last one before the request
  LEFT JOIN LATERAL (
      SELECT pa.activated_by, pa.activated_at FROM warden.policy_activations pa
       WHERE pa.tenant_id = a.tenant_id AND pa.snapshot_hash = a.policy_snapshot_hash
         AND pa.activated_at <= a.requested_at
       ORDER BY pa.activation_id DESC LIMIT 1) act ON true
  -- the hash of what is stored now, computed as the approval's was: a policy approval is
  -- bound to its job row; a step approval to the run input and its dependencies' outputs
  LEFT JOIN LATERAL (
      SELECT CASE WHEN a.kind = 'policy' THEN (
                 SELECT warden.job_hash(j.tenant_id, j.run_id, j.step_id, j.topic, j.input,
                                        j.upstream, j.constraints)
                   FROM warden.jobs j WHERE j.tenant_id = a.tenant_id AND j.job_id = a.job_id)
             ELSE (
                 SELECT warden.job_hash(a.tenant_id, a.run_id, a.step_id, NULL, r.input,
                                        coalesce(jsonb_object_agg(d.step_id, d.output), '{}'),
                                        '{}')
                   FROM warden.steps s
                   JOIN warden.steps d ON d.tenant_id = s.tenant_id AND d.run_id = s.run_id
                                      AND d.step_id = ANY (s.depends_on)
                  WHERE s.tenant_id = a.tenant_id AND s.run_id = a.run_id
                    AND s.step_id = a.step_id)
             END AS job_hash) now_hash ON true
  LEFT JOIN LATERAL (
      SELECT min(t.seq) FILTER (WHERE t.kind = 'approval.requested') AS requested_seq,
             min(t.seq) FILTER (WHERE t.kind <> 'approval.requested') AS decided_seq
        FROM warden.timeline t
       WHERE t.tenant_id = a.tenant_id AND t.run_id = a.run_id
         AND t.kind IN ('approval.requested', 'approval.approved', 'approval.rejected',
                        'approval.expired', 'approval.superseded')
         AND t.data->>'approval_id' = a.approval_id::text) seqs ON true;
-- One row per job attempt (docs/dba.md, "Evidence views"): the run, the policy decisions
-- that let it run (the step's submit decision and every dispatch decision about this
-- attempt: stage, snapshot hash, rule, decision, reason, constraints), the approval that
-- released it (a policy approval of this attempt, else an approved approval step it
-- depends on: who, when, why, the job hash approved and whether it matches what ran), the
-- worker, the outcome and the seqs of its timeline events. Read it by (tenant_id, run_id),
-- (tenant_id, job_id) or (tenant_id, created_at).
CREATE OR REPLACE VIEW warden.job_evidence AS
SELECT j.tenant_id, j.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, j.step_id, j.job_id, j.attempt, j.topic,
       j.status AS outcome, j.worker, j.created_at, j.started_at, j.finished_at, j.result,
       j.error, j.policy_snapshot_hash, j.constraints, d.decisions,
       ap.approval_id, ap.kind AS approval_kind, ap.decided_by AS approved_by,
       ap.decided_at AS approved_at, ap.reason AS approval_reason, ap.approved_job_hash,
       ap.policy_snapshot_hash AS approval_snapshot_hash,
       ap.job_hash_matches AS approval_matches_what_ran,
       tl.seqs AS timeline_seqs
  FROM warden.jobs j
  JOIN warden.runs r ON r.tenant_id = j.tenant_id AND r.run_id = j.run_id
  JOIN warden.steps s ON s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                     AND s.step_id = j.step_id
  LEFT JOIN LATERAL (
      SELECT jsonb_agg(jsonb_build_object(
                 'stage', pd.stage, 'snapshot_hash', pd.snapshot_hash, 'rule', pd.rule,
                 'decision', pd.decision, 'reason', pd.reason, 'constraints', pd.constraints,
                 'at', pd.at) ORDER BY pd.decision_id) AS decisions
        FROM warden.policy_decisions pd
       WHERE pd.tenant_id = j.tenant_id AND pd.run_id = j.run_id AND pd.step_id = j.step_id
         AND (pd.job_id = j.job_id OR pd.stage = 'submit')) d ON true
  LEFT JOIN LATERAL (
      SELECT ae.approval_id, ae.kind, ae.decided_by, ae.decided_at, ae.reason,
             ae.approved_job_hash, ae.policy_snapshot_hash, ae.job_hash_matches
        FROM warden.approval_evidence ae
       WHERE ae.tenant_id = j.tenant_id AND ae.run_id = j.run_id AND ae.status = 'approved'
         AND (ae.job_id = j.job_id OR (ae.kind = 'step' AND ae.step_id = ANY (s.depends_on)))
       ORDER BY ae.kind = 'policy' DESC, ae.decided_at DESC
       LIMIT 1) ap ON true
  LEFT JOIN LATERAL (
      SELECT array_agg(t.seq ORDER BY t.seq) AS seqs FROM warden.timeline t
       WHERE t.tenant_id = j.tenant_id AND t.job_id = j.job_id) tl ON true;

GRANT SELECT ON warden.timeline, warden.policy_decisions TO warden_engine, warden_auditor;
GRANT INSERT ON warden.policy_decisions TO warden_engine;
GRANT SELECT ON warden.job_evidence, warden.approval_evidence TO warden_engine, warden_auditor;
REVOKE ALL ON warden.timeline_check FROM PUBLIC;
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['timeline', 'policy_decisions'] LOOP
        EXECUTE format('ALTER TABLE warden.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY tenant_scope ON warden.%I TO warden_engine '
                       'USING (warden.in_scope(tenant_id)) '
                       'WITH CHECK (warden.in_scope(tenant_id))', v_table);
        EXECUTE format('DROP POLICY IF EXISTS audit_reads ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY audit_reads ON warden.%I FOR SELECT TO warden_auditor '
                       'USING (true)', v_table);
    END LOOP;
END $rls$;

-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
--
-- Each hash is HMAC-SHA-256 under the active chain key (sql/schema/55_chain_keys.sql),
-- inlined as two sha256 calls. SECURITY DEFINER to read the key; it signs only events it
-- appends itself, at the run's next seq after the head, so a caller gets no MAC of a row
-- it could put anywhere else (an existing (run, seq) is refused by the primary key).
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
    v_key  integer;
    v_ipad bytea;
    v_opad bytea;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_seq, v_prev
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id',
                      e->>'job_id', (e->>'attempt')::integer, e->>'actor',
                      coalesce(e->'data', '{}')))), 'hex');
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash, key_id)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash, v_key);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- As SECURITY DEFINER it would let any role append to any run: only the roles that write
-- runs may (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) FROM PUBLIC;
-- Before an approval is stored (sql/triggers/approvals.sql): requested_by must be whoever
-- started its run, and barred becomes every principal that started a run of the rerun
-- chain (the run, the run it reruns, and so on back to the original), together with any
-- names the inserter passed. An inserter can bar more principals, never fewer. The
-- constraint approvals_no_rerun_chain_approval then refuses a decision by any of them.
CREATE OR REPLACE FUNCTION warden.approval_bar_rerun_chain() RETURNS trigger
-- as the owner: row-level security must never hide an ancestor run from the walk below
-- (the inserting engine session is scoped to one tenant, but a smaller `barred` would let
-- a starter decide)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    starter text;
    starters text[];
BEGIN
    SELECT created_by INTO starter FROM warden.runs
     WHERE tenant_id = NEW.tenant_id AND run_id = NEW.run_id;
    IF NOT FOUND THEN
        RETURN NEW;  -- no such run: the foreign key to its step refuses the row
    END IF;
    IF NEW.requested_by IS DISTINCT FROM starter THEN
        RAISE EXCEPTION 'an approval of run % is requested by %, who started it, not by %',
            NEW.run_id, starter, NEW.requested_by USING ERRCODE = 'WD010';
    END IF;
    -- UNION, not UNION ALL: were rerun_of ever to form a cycle, the walk ends instead of
    -- looping. A rerun is always of the same tenant.
    WITH RECURSIVE chain (run_id, rerun_of, created_by) AS (
        SELECT r.run_id, r.rerun_of, r.created_by FROM warden.runs r
         WHERE r.tenant_id = NEW.tenant_id AND r.run_id = NEW.run_id
        UNION
        SELECT r.run_id, r.rerun_of, r.created_by
          FROM chain c JOIN warden.runs r ON r.tenant_id = NEW.tenant_id AND r.run_id = c.rerun_of
    )
    SELECT array_agg(DISTINCT p ORDER BY p) INTO starters
      FROM (SELECT created_by FROM chain
            UNION ALL SELECT unnest(coalesce(NEW.barred, '{}'))) AS named (p)
     WHERE p IS NOT NULL;
    NEW.barred := starters;
    RETURN NEW;
END $$;
-- The trigger function of every append-only table (sql/triggers/append_only.sql): the
-- timeline, policy decisions and activations, and the content-addressed snapshots.
CREATE OR REPLACE FUNCTION warden.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'WD010';
END $$;

DROP FUNCTION warden.retention_drop(timestamptz, timestamptz, jsonb, text, text, text);
DROP FUNCTION warden.retention_partitions(timestamptz);
DROP FUNCTION warden.run_partitions_ready();
DROP FUNCTION warden.ensure_partitions(integer);
DROP FUNCTION warden.create_partitions(timestamptz);
ALTER TABLE warden.runs DROP CONSTRAINT runs_partition_key;
RESET ROLE;
DROP SCHEMA warden_partitions;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
