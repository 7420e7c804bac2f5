-- Appends one event to a run's timeline and returns its seq, asking nobody's tenant
-- scope: append_events_unscoped with one event. For the job functions only (heartbeat,
-- fail, release, the reaper, end_attempt), which run as the owner for worker sessions
-- that carry no scope and check the worker's grant and lease themselves; the engine
-- calls warden.append_event. Callers must already hold any job/approval locks they need
-- (lock order: jobs -> approvals -> runs -> steps).
CREATE OR REPLACE FUNCTION warden.append_event_unscoped(
    p_tenant text, p_run uuid, p_kind warden.timeline_kind, p_step text, p_job text,
    p_attempt integer, p_actor text, p_data jsonb
) RETURNS bigint LANGUAGE sql AS $$
    SELECT warden.append_events_unscoped(p_tenant, p_run, jsonb_build_array(
        jsonb_build_object('kind', p_kind, 'step_id', p_step, 'job_id', p_job,
                           'attempt', p_attempt, 'actor', p_actor,
                           'data', coalesce(p_data, '{}'))))
$$;
-- No role but the owner may call it (what it calls is the owner's alone anyway).
REVOKE EXECUTE ON FUNCTION warden.append_event_unscoped(text, uuid, warden.timeline_kind,
    text, text, integer, text, jsonb) FROM PUBLIC;
