-- Appends one event to a run's timeline and returns its seq: append_events with one event,
-- so for an engine session whose tenant scope covers p_tenant only (the job functions
-- call append_event_unscoped).
-- Callers must already hold any job/approval locks they need (lock order: jobs ->
-- approvals -> runs -> steps).
CREATE OR REPLACE FUNCTION warden.append_event(
    p_tenant text, p_run uuid, p_kind warden.timeline_kind, p_step text, p_job text,
    p_attempt integer, p_actor text, p_data jsonb
) RETURNS bigint LANGUAGE sql AS $$
    SELECT warden.append_events(p_tenant, p_run, jsonb_build_array(jsonb_build_object(
        'kind', p_kind, 'step_id', p_step, 'job_id', p_job, 'attempt', p_attempt,
        'actor', p_actor, 'data', coalesce(p_data, '{}'))))
$$;
