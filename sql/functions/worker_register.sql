-- A worker announces itself at start and gets its warden.workers row back. SECURITY
-- DEFINER: a worker role may execute the job protocol and these presence calls, and
-- touch no table (docs/security.md); the row records the login role that registered it.
-- Rows of workers gone (stopped or silent) for a day are pruned here, so the table stays
-- the size of the fleet without a janitor loop.
CREATE OR REPLACE FUNCTION warden.worker_register(
    p_name text, p_host text, p_pid integer, p_topics text[], p_concurrency integer,
    p_version text, p_heartbeat_ms integer
) RETURNS SETOF warden.workers
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    DELETE FROM warden.workers
     WHERE coalesce(stopped_at, last_seen_at) < now() - interval '1 day';
    INSERT INTO warden.workers (role_name, name, host, pid, topics, concurrency, version,
                                heartbeat_ms)
    VALUES (session_user, p_name, p_host, p_pid, p_topics, p_concurrency, p_version,
            p_heartbeat_ms)
    RETURNING *;
$$;
