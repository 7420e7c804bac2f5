-- The trigger function of jobs_claim_marks_on_insert (sql/triggers/jobs.sql): once per
-- INSERT statement, the least claim key each lane receives among the statement's pending
-- jobs keeps that lane's floor at or below it (warden.lower_claim_mark). Once per
-- statement, not per row: a fan-out dispatches a hundred jobs of one lane in one INSERT.
CREATE OR REPLACE FUNCTION warden.claim_marks_on_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l record;
BEGIN
    FOR l IN
        SELECT DISTINCT ON (n.topic, n.tenant_id, n.concurrency_key, n.rate_key)
               n.topic, n.tenant_id, n.concurrency_key, n.rate_key, n.priority,
               n.available_at
          FROM inserted n
         WHERE n.status = 'pending'
         ORDER BY n.topic, n.tenant_id, n.concurrency_key, n.rate_key, n.priority,
                  n.available_at
    LOOP
        PERFORM warden.lower_claim_mark(l.topic, l.tenant_id, l.concurrency_key, l.rate_key,
                                        l.priority, l.available_at);
    END LOOP;
    RETURN NULL;
END $$;
