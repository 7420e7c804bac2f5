-- The clock of every comparison the database makes: lease expiry, backoff, deadlines,
-- approval expiry, claimability. The transaction's now(), moved forward by the shift in
-- warden.clock (sql/schema/01_clock.sql), which only tests write.
--
-- PL/pgSQL, not SQL: a SQL function that reads a table cannot be inlined, and PostgreSQL
-- then parses and plans its body afresh in every statement that calls it (~50 us, more
-- than most statements it guards); PL/pgSQL keeps the plan for the session (~9 us a
-- statement, ~1 us more per extra row; docs/design.md#sql-helpers-that-keep-their-plans).
-- STABLE: one statement's calls agree, and an index scan may take it as a key.
CREATE OR REPLACE FUNCTION warden.now() RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN now() + coalesce((SELECT c.shift FROM warden.clock c), interval '0');
END
$$;
