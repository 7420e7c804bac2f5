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
