-- Row-level security on every tenant table: a second fence behind the API's own tenant
-- checks. An engine session sees and writes only the rows of the tenant its transaction
-- carries in warden.tenant (warden.in_scope): each API request sets its caller's tenant,
-- and only the loops that act across tenants by design set '*' (engine/store/scope.py).
-- A query written without any tenant filter, inside an API request, returns that
-- tenant's rows alone. Auditors read across tenants. The owner is not subject to these
-- policies (no FORCE), so the SECURITY DEFINER worker functions, which check the
-- worker's grants themselves, see every tenant.
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['workflows', 'runs', 'steps', 'step_items', 'jobs', 'approvals',
                                   'notifications', 'timeline', 'policy_snapshots',
                                   'policy_active', 'policy_activations',
                                   'policy_decisions', 'archived_runs',
                                   'events', 'schedules', 'schedule_ticks',
                                   'event_triggers', 'event_starts',
                                   'dispatch_plans', 'start_plans', 'run_ends'] LOOP
        EXECUTE format('ALTER TABLE warden.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS tenant_scope ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY tenant_scope ON warden.%I TO warden_engine '
                       'USING (warden.in_scope(tenant_id)) '
                       'WITH CHECK (warden.in_scope(tenant_id))', v_table);
        EXECUTE format('DROP POLICY IF EXISTS audit_reads ON warden.%I', v_table);
        EXECUTE format('CREATE POLICY audit_reads ON warden.%I FOR SELECT TO warden_auditor '
                       'USING (true)', v_table);
    END LOOP;
END $rls$;
-- The claim marks (sql/schema/22_claim_marks.sql) are no role's to read or write but the
-- owner's functions': row-level security on and no policy, behind the missing grants.
ALTER TABLE warden.claim_marks ENABLE ROW LEVEL SECURITY;
