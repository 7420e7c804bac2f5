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
