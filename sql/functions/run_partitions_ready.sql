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
