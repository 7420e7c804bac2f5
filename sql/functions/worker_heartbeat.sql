-- A registered worker says it is alive and how many jobs it holds. No row back: its row
-- is gone (pruned while the worker was cut off), stopped, or another login role's — it
-- registers again. Only the role that registered a row may refresh it.
CREATE OR REPLACE FUNCTION warden.worker_heartbeat(p_worker_id uuid, p_jobs_in_flight integer)
RETURNS SETOF warden.workers
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE warden.workers
       SET last_seen_at = now(), jobs_in_flight = p_jobs_in_flight
     WHERE worker_id = p_worker_id AND stopped_at IS NULL AND role_name = session_user
    RETURNING *;
$$;
