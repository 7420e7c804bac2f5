-- Records an event and wakes the runs waiting for it (docs/workflows.md#events), and the
-- loop that starts the workflows subscribing to it; the one write path of warden.events,
-- for the API, the CLI and SQL clients alike.
--
-- Who may send for a tenant: an engine session (warden_engine) whose warden.tenant scope
-- covers it, as row-level security would; any other login role (a SQL client) needs a
-- grant of warden.worker_grants on the tenant and the topic 'event.<name>' (`warden
-- workers grant ROLE --tenant T --topic 'event.*'`), and is recorded as the sender.
--
-- outcome: 'created'; 'duplicate' (the same event_id with the same name, key and data:
-- the stored event is returned unchanged); 'conflict' (the same event_id with other
-- content: nothing changes). Events are kept p_keep_ms after receipt (else the setting
-- warden.event_keep_ms, else one day; at most 30 days).
--
-- Lock order: the (tenant, name, key) advisory lock, then the waiting runs in run_id
-- order. The scheduler, which holds run locks, only ever *tries* that advisory lock.
CREATE OR REPLACE FUNCTION warden.send_event(
    p_tenant text, p_event_id text, p_name text, p_key text, p_data jsonb,
    p_sent_by text DEFAULT NULL, p_keep_ms bigint DEFAULT NULL)
RETURNS TABLE (event_id text, name text, key text, data jsonb, sent_by text,
               received_at timestamptz, expires_at timestamptz, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_engine boolean := pg_has_role(session_user, 'warden_engine', 'MEMBER');
    v_keep bigint;
    v_digest text;
    v_row warden.events;
    v_outcome text := 'created';
BEGIN
    IF p_tenant IS NULL OR p_event_id IS NULL OR p_name IS NULL OR p_key IS NULL THEN
        RAISE EXCEPTION 'tenant, event id, name and key are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- a superuser could write the table itself; the check is for the roles it fences
    -- coalesce: an unset warden.tenant makes in_scope NULL, which must refuse too
    IF NOT coalesce(CASE WHEN (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)
                         THEN true
                         WHEN v_engine THEN warden.in_scope(p_tenant)
                         ELSE warden.granted(p_tenant, 'event.' || p_name) END, false) THEN
        RAISE EXCEPTION 'not allowed to send events % of tenant %', p_name, p_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    v_keep := least(greatest(coalesce(
        p_keep_ms, nullif(current_setting('warden.event_keep_ms', true), '')::bigint,
        86400000), 0), 30::bigint * 86400000);
    v_digest := encode(sha256(convert_to(warden.canonical_json(jsonb_build_object(
        'name', p_name, 'key', p_key, 'data', coalesce(p_data, 'null'::jsonb))), 'UTF8')),
        'hex');
    PERFORM pg_advisory_xact_lock(warden.event_lock(p_tenant, p_name, p_key));
    INSERT INTO warden.events AS e (tenant_id, event_id, name, key, data, digest, sent_by,
                                    received_at, expires_at)
    VALUES (p_tenant, p_event_id, p_name, p_key, coalesce(p_data, 'null'::jsonb), v_digest,
            CASE WHEN v_engine THEN coalesce(p_sent_by, session_user::text)
                 ELSE session_user::text END,
            warden.now(), warden.now() + v_keep * interval '1 millisecond')
    ON CONFLICT ON CONSTRAINT events_pkey DO NOTHING
    RETURNING e.* INTO v_row;
    IF v_row.event_id IS NULL THEN
        SELECT e.* INTO v_row FROM warden.events e
         WHERE e.tenant_id = p_tenant AND e.event_id = p_event_id;
        v_outcome := CASE WHEN v_row.digest = v_digest THEN 'duplicate' ELSE 'conflict' END;
    ELSE
        -- the runs already waiting: locked in run_id order, then flagged for the scheduler
        PERFORM 1 FROM warden.runs r
         WHERE r.tenant_id = p_tenant AND r.run_id IN (
               SELECT s.run_id FROM warden.steps s
                WHERE s.tenant_id = p_tenant AND s.status = 'waiting'
                  AND s.await_event = p_name AND s.await_key = p_key)
         ORDER BY r.run_id FOR NO KEY UPDATE OF r;
        UPDATE warden.runs r SET needs_scheduling = true
         WHERE r.tenant_id = p_tenant AND NOT r.needs_scheduling AND r.run_id IN (
               SELECT s.run_id FROM warden.steps s
                WHERE s.tenant_id = p_tenant AND s.status = 'waiting'
                  AND s.await_event = p_name AND s.await_key = p_key);
        PERFORM pg_notify('warden_scheduler', '');
        -- the workflows it starts (docs/workflows.md#event-started-runs): started by the
        -- event-starts loop of `warden serve`, after this commits, so a send stays fast
        IF EXISTS (SELECT 1 FROM warden.event_triggers t
                    WHERE t.tenant_id = p_tenant AND t.event_name = p_name AND t.active) THEN
            PERFORM pg_notify('warden_event_starts', '');
        END IF;
    END IF;
    RETURN QUERY SELECT v_row.event_id, v_row.name, v_row.key, v_row.data, v_row.sent_by,
                        v_row.received_at, v_row.expires_at, v_outcome;
END
$$;
