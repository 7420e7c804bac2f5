-- The claim floor of one lane (sql/schema/22_claim_marks.sql): no pending job of the
-- lane comes before (priority, available_at) in claim order; available_at 'infinity':
-- the lane had no pending job when last looked at, and nothing was dispatched to it
-- since. No row: the lane has no mark (it never had a pending job, or was forgotten).
--
-- The least of the lane's newest advance row and every row after it: both reads walk the
-- primary key from the newest row down, so the rows the advancer deleted, all older, are
-- never visited. SQL and STABLE with no SET clause, so that the planner inlines it into
-- warden.claim_jobs' lane scan. Only the owner's functions call it: no grant.
CREATE OR REPLACE FUNCTION warden.claim_floor(
    p_topic text, p_tenant_id text, p_concurrency_key text, p_rate_key text
) RETURNS TABLE (priority smallint, available_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT m.priority, m.available_at
      FROM warden.claim_marks m
     WHERE m.topic = p_topic AND m.tenant_id = p_tenant_id
       AND m.concurrency_key = p_concurrency_key AND m.rate_key = p_rate_key
       AND m.epoch >= coalesce((
           SELECT a.epoch FROM warden.claim_marks a
            WHERE a.topic = p_topic AND a.tenant_id = p_tenant_id
              AND a.concurrency_key = p_concurrency_key AND a.rate_key = p_rate_key
              AND a.advance
            ORDER BY a.epoch DESC
            LIMIT 1), 0)
     ORDER BY m.priority, m.available_at
     LIMIT 1
$$;
