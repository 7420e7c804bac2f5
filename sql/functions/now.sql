-- The clock of every comparison the database makes: lease expiry, backoff, deadlines,
-- approval expiry, claimability. The transaction's now(), moved forward by the shift in
-- warden.clock (sql/schema/01_clock.sql), which only tests write. STABLE, so a statement
-- reads it once.
CREATE OR REPLACE FUNCTION warden.now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT now() + coalesce((SELECT c.shift FROM warden.clock c), interval '0')
$$;
