-- True when row-level security (sql/grants/30_row_security.sql) would show this session
-- the rows of every tenant: its scope is '*' (the loops that act across tenants by design,
-- engine/store/scope.py), or its login is an auditor (policy audit_reads), the schema's
-- owner or a superuser (no policy applies to them; pg_has_role is true for a superuser).
-- The SECURITY DEFINER functions that read for a caller ask it, as row-level security
-- does not fence the owner they run as (docs/security.md). session_user: inside such a
-- function current_user is the owner. Called as the owner only: no grant.
CREATE OR REPLACE FUNCTION warden.sees_every_tenant() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('warden.tenant', true) = '*', false)
        OR pg_has_role(session_user, 'warden_auditor', 'USAGE')
        OR pg_has_role(session_user, 'warden_owner', 'USAGE')
$$;
