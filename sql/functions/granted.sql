-- Whether the session's login role may work on a job of this tenant and topic
-- (warden.granted_to). session_user, not current_user: inside the SECURITY DEFINER
-- worker functions current_user is the owner, session_user is who logged in. A claim asks
-- it once per lane; a lease, once handed out, carries its role (jobs.lease_role), and the
-- fence compares that instead (sql/functions/lease_held_at.sql).
CREATE OR REPLACE FUNCTION warden.granted(p_tenant text, p_topic text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN warden.granted_to(session_user::text, p_tenant, p_topic);
END
$$;
