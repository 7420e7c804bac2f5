-- A worker's clean exit: its row is kept for a day as stopped, so operators see that it
-- left. Only the role that registered the row may stop it.
CREATE OR REPLACE FUNCTION warden.worker_stop(p_worker_id uuid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE warden.workers
       SET stopped_at = now(), last_seen_at = now(), jobs_in_flight = 0
     WHERE worker_id = p_worker_id AND stopped_at IS NULL AND role_name = session_user;
$$;
