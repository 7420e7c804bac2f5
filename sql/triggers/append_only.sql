-- Append-only tables refuse changes at the database, whoever asks (privileges refuse them
-- too: sql/schema/50_timeline.sql, 60_policy.sql). A superuser can still disable these;
-- docs/dba.md says what the hash chain then does and does not prove.
CREATE OR REPLACE TRIGGER timeline_no_update_delete BEFORE UPDATE OR DELETE ON warden.timeline
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER timeline_no_truncate BEFORE TRUNCATE ON warden.timeline
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_decisions_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_decisions
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_activations_append_only
    BEFORE UPDATE OR DELETE ON warden.policy_activations
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_snapshots_immutable
    BEFORE UPDATE OR DELETE ON warden.policy_snapshots
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_append_only_no_truncate BEFORE TRUNCATE ON warden.policy_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_activations_no_truncate
    BEFORE TRUNCATE ON warden.policy_activations
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER policy_snapshots_no_truncate BEFORE TRUNCATE ON warden.policy_snapshots
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
-- A deleted chain key would leave every event it signed unverifiable.
CREATE OR REPLACE TRIGGER chain_keys_no_delete BEFORE DELETE ON warden.chain_keys
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER chain_keys_no_truncate BEFORE TRUNCATE ON warden.chain_keys
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
-- What retention archived is a record of the past like the timeline it replaces.
CREATE OR REPLACE TRIGGER archived_runs_append_only BEFORE UPDATE OR DELETE ON warden.archived_runs
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER archived_runs_no_truncate BEFORE TRUNCATE ON warden.archived_runs
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();
