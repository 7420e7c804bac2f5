-- A run's partitions exist before the run does (sql/functions/run_partitions_ready.sql).
CREATE OR REPLACE TRIGGER runs_partitions_ready BEFORE INSERT ON warden.runs
    FOR EACH ROW EXECUTE FUNCTION warden.run_partitions_ready();
