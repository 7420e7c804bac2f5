-- The fence at the database's time now: warden.lease_held_at(j, presented, warden.now()),
-- which says what the fence is. The writes of one job call this; complete_jobs, which
-- holds the time already, calls lease_held_at. Inlined like it.
CREATE OR REPLACE FUNCTION warden.lease_held(j warden.jobs, presented uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT warden.lease_held_at(j, presented, warden.now())
$$;
