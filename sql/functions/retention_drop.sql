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
-- runs (index lookups), children first: notifications, approvals, jobs, for_each items,
-- steps, runs. A child run whose parent is in a later month is refused by runs_parent (the
-- month waits for its parent's; docs/dba.md).
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
    DELETE FROM warden.step_items i
     USING jsonb_to_recordset(p_runs) AS x(tenant_id text, run_id uuid)
     WHERE i.tenant_id = x.tenant_id AND i.run_id = x.run_id;
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
