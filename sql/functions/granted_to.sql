-- Whether a login role may work on a job of this tenant and topic (warden.worker_grants):
-- the one reading of the grants. warden.granted asks it for the session's own login role
-- (claims, fence_outcome); warden.end_ungranted_leases for the role each running lease was
-- handed to, when grants change. PL/pgSQL for the reason warden.now() is
-- (sql/functions/now.sql).
CREATE OR REPLACE FUNCTION warden.granted_to(p_role text, p_tenant text, p_topic text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM warden.worker_grants g
                    WHERE g.role_name = p_role
                      AND (g.tenant_id = '*' OR g.tenant_id = p_tenant)
                      AND p_topic LIKE g.topic_like);
END
$$;
