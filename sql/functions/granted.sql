-- Whether the session's login role may work on a job of this tenant and topic
-- (warden.worker_grants). session_user, not current_user: inside the SECURITY DEFINER
-- worker functions current_user is the owner, session_user is who logged in. PL/pgSQL for
-- the reason warden.now() is (sql/functions/now.sql): every claim and every fenced worker
-- write calls it.
CREATE OR REPLACE FUNCTION warden.granted(p_tenant text, p_topic text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM warden.worker_grants g
                    WHERE g.role_name = session_user::text
                      AND (g.tenant_id = '*' OR g.tenant_id = p_tenant)
                      AND p_topic LIKE g.topic_like);
END
$$;
