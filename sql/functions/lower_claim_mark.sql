-- Keeps a lane's claim floor at or below a job that is becoming pending in it
-- (sql/schema/22_claim_marks.sql), in the transaction that makes it pending: called by
-- the jobs triggers (sql/triggers/jobs.sql) for each lane a statement adds pending jobs
-- to, with the least (priority, available_at) among them.
--
-- The shared lock on the lane's (topic, tenant) is held to this transaction's end: the
-- advancer (warden.advance_claim_marks) only tries the exclusive one, so it never raises
-- a floor while a job below the new floor may still be uncommitted. A writer that comes
-- while the advancer holds the lock waits for its commit, then reads the raised floor
-- here with a snapshot taken after it, and lowers it again if its job is below.
--
-- SECURITY DEFINER: the triggers fire for the engine and for the owner's functions alike,
-- and only the owner may write warden.claim_marks. No grant.
CREATE OR REPLACE FUNCTION warden.lower_claim_mark(
    p_topic text, p_tenant_id text, p_concurrency_key text, p_rate_key text,
    p_priority smallint, p_available_at timestamptz
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended(concat_ws(chr(31), 'm', p_topic, p_tenant_id), 14));
    IF NOT EXISTS (
        SELECT 1 FROM warden.claim_floor(p_topic, p_tenant_id, p_concurrency_key,
                                         p_rate_key) f
         WHERE (f.priority, f.available_at) <= (p_priority, p_available_at)) THEN
        INSERT INTO warden.claim_marks
            (topic, tenant_id, concurrency_key, rate_key, advance, priority, available_at)
        VALUES (p_topic, p_tenant_id, p_concurrency_key, p_rate_key, false, p_priority,
                p_available_at);
    END IF;
END $$;
