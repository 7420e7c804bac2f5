-- Whether the session's login role may work on a job of this tenant and topic
-- (warden.worker_grants). session_user, not current_user: inside the SECURITY DEFINER
-- worker functions current_user is the owner, session_user is who logged in.
CREATE OR REPLACE FUNCTION warden.granted(p_tenant text, p_topic text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM warden.worker_grants g
                    WHERE g.role_name = session_user::text
                      AND (g.tenant_id = '*' OR g.tenant_id = p_tenant)
                      AND p_topic LIKE g.topic_like)
$$;
