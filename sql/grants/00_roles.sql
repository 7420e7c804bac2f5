-- The four group roles of docs/security.md (NOLOGIN: login roles are granted them).
-- Roles belong to the cluster, not the database: they are created once, by whoever first
-- migrates a Warden database on the server, and reused by every other. A migrating role
-- that may not create roles stops here with the SQL an administrator runs instead.
DO $roles$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['warden_owner', 'warden_engine', 'warden_worker',
                                  'warden_auditor'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another session created it meanwhile
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'this role may not create roles; Warden needs four'
                    USING ERRCODE = 'WD403',
                          HINT = 'an administrator runs: CREATE ROLE warden_owner NOLOGIN; '
                              || 'CREATE ROLE warden_engine NOLOGIN; '
                              || 'CREATE ROLE warden_worker NOLOGIN; '
                              || 'CREATE ROLE warden_auditor NOLOGIN; '
                              || 'GRANT warden_owner TO ' || quote_ident(current_user)
                              || '; then runs warden migrate again';
        END;
    END LOOP;
END $roles$;
