-- Row-level security's tenant fence (sql/grants/30_row_security.sql): a row is visible to
-- an engine session when its tenant is the one the session's transaction carries in
-- warden.tenant — set per API request, or '*' by the loops that act across tenants by
-- design (engine/store/scope.py). Unset or empty: no row.
CREATE OR REPLACE FUNCTION warden.in_scope(p_tenant text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT p_tenant = current_setting('warden.tenant', true)
        OR current_setting('warden.tenant', true) = '*'
$$;
