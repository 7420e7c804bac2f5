-- Marks a run for the scheduler and wakes schedulers. The NOTIFY carries no payload:
-- Postgres folds identical notifications of one transaction into one, and the scheduler
-- finds its work through the runs_to_schedule index anyway (NOTIFY is only a hint).
CREATE OR REPLACE FUNCTION warden.wake_run(p_tenant text, p_run uuid) RETURNS void
LANGUAGE sql AS $$
    UPDATE warden.runs SET needs_scheduling = true
     WHERE tenant_id = p_tenant AND run_id = p_run AND NOT needs_scheduling;
    SELECT pg_notify('warden_scheduler', '');
$$;
