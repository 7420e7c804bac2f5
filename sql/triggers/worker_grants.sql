-- A grant taken back ends the leases it covered (sql/functions/end_ungranted_leases.sql).
-- Inserts never take anything away; an upsert's DO UPDATE fires the UPDATE trigger and
-- finds nothing to end.
CREATE OR REPLACE TRIGGER worker_grants_end_leases
    AFTER DELETE OR UPDATE OR TRUNCATE ON warden.worker_grants
    FOR EACH STATEMENT
    EXECUTE FUNCTION warden.end_ungranted_leases();
