-- After an attempt ended without success: schedule the next attempt if the step has one
-- left and the error is retryable, else end the step with p_step_status. Internal to the
-- job protocol (fail_job, release_job, reap_expired_jobs). The attempt of a for_each
-- item (j.item_index set) schedules or ends that item, with the retry contract of its
-- step: the scheduler then decides what the step's outcome is (engine/scheduling/fanout.py).
CREATE OR REPLACE FUNCTION warden.end_attempt(
    j warden.jobs, p_step_status warden.step_status, p_error jsonb, p_retryable boolean
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s       warden.steps;
    i       warden.step_items;
    v_delay double precision;
BEGIN
    -- lock order: the run before its steps (callers normally hold it already)
    PERFORM 1 FROM warden.runs WHERE tenant_id = j.tenant_id AND run_id = j.run_id
        FOR NO KEY UPDATE;
    IF j.item_index IS NOT NULL THEN
        SELECT * INTO s FROM warden.steps
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id;
        SELECT * INTO i FROM warden.step_items
         WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
           AND item_index = j.item_index
           FOR NO KEY UPDATE;
        IF i.status <> 'running' THEN
            RETURN;  -- the step or the run ended meanwhile: nothing to schedule
        END IF;
        IF p_retryable AND j.attempt < i.max_attempts THEN
            v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
            v_delay := v_delay * (1 + s.jitter * random());
            UPDATE warden.step_items
               SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
                   error = p_error
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
            PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id,
                'job.retry_scheduled', j.step_id, j.job_id, j.attempt, NULL,
                jsonb_build_object(
                    'item_index', j.item_index, 'next_attempt', j.attempt + 1,
                    'delay_ms', round(v_delay),
                    'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
        ELSE
            UPDATE warden.step_items SET status = p_step_status, error = p_error,
                                         finished_at = warden.now(), retry_at = NULL
             WHERE tenant_id = i.tenant_id AND run_id = i.run_id AND step_id = i.step_id
               AND item_index = i.item_index;
        END IF;
        PERFORM warden.wake_run(j.tenant_id, j.run_id);
        RETURN;
    END IF;
    SELECT * INTO s FROM warden.steps
     WHERE tenant_id = j.tenant_id AND run_id = j.run_id AND step_id = j.step_id
       FOR NO KEY UPDATE;
    IF s.status <> 'running' THEN
        RETURN;  -- the run was cancelled or the step already ended: nothing to schedule
    END IF;
    IF p_retryable AND j.attempt < s.max_attempts THEN
        -- backoff_ms * multiplier^(n-1), capped; jitter only ever adds, so no retry comes
        -- earlier than the configured backoff
        v_delay := least(s.backoff_ms * power(s.multiplier, j.attempt - 1), s.max_backoff_ms);
        v_delay := v_delay * (1 + s.jitter * random());
        UPDATE warden.steps
           SET retry_at = warden.now() + make_interval(secs => v_delay / 1000.0),
               error = p_error
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
        PERFORM warden.append_event_unscoped(j.tenant_id, j.run_id, 'job.retry_scheduled',
            j.step_id, j.job_id, j.attempt, NULL, jsonb_build_object(
                'next_attempt', j.attempt + 1, 'delay_ms', round(v_delay),
                'retry_at', warden.now() + make_interval(secs => v_delay / 1000.0)));
    ELSE
        UPDATE warden.steps SET status = p_step_status, error = p_error,
                                finished_at = warden.now(), retry_at = NULL
         WHERE tenant_id = s.tenant_id AND run_id = s.run_id AND step_id = s.step_id;
    END IF;
    PERFORM warden.wake_run(j.tenant_id, j.run_id);
END $$;
