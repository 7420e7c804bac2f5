-- warden.now()'s wall-clock twin, for timeline events: each event's `at` is the moment
-- it was written (several events of one transaction are ordered in time), on the same
-- shifted clock as everything it is compared with. PL/pgSQL for the reason warden.now()
-- is (sql/functions/now.sql).
CREATE OR REPLACE FUNCTION warden.clock_timestamp() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
BEGIN
    RETURN clock_timestamp() + coalesce((SELECT c.shift FROM warden.clock c), interval '0');
END
$$;
