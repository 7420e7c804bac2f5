"""Event-started runs: a workflow's `on_event` subscriptions (warden.event_triggers), the
ledger of what each event started (warden.event_starts, once per tenant, event and
workflow), and warden.send_event notifying the event-starts loop of `warden serve`
(docs/workflows.md#event-started-runs).

Revision ID: 0014_event_starts
Revises: 0013_blocked_release
Create Date: 2026-12-06

Frozen.
"""

from alembic import op

revision = "0014_event_starts"
down_revision = "0013_blocked_release"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Event-started runs (docs/workflows.md#event-started-runs): a workflow's `on_event`
-- subscriptions. One row per (tenant, workflow, event name), written when a version of
-- the workflow is stored and it is the newest: the newest version of a workflow id is the
-- active one, as for schedules. A name the newest version no longer subscribes to stays,
-- inactive. `since` is when the subscription (last) became active: an event received
-- before it starts nothing for this workflow.
CREATE TABLE warden.event_triggers (
    tenant_id        text        NOT NULL,
    workflow_id      text        NOT NULL,
    event_name       text        NOT NULL,
    -- the stored version that declared the subscription as it is now
    workflow_version text        NOT NULL,
    -- templates over ${event.*}, rendered into the run's input
    input            jsonb       NOT NULL DEFAULT '{}',
    active           boolean     NOT NULL DEFAULT true,
    since            timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, event_name),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES warden.workflows (tenant_id, workflow_id, version)
);
-- An event's subscribers.
CREATE INDEX event_triggers_by_name ON warden.event_triggers (tenant_id, event_name)
    WHERE active;

-- One row per (event, subscribing workflow) handled: the primary key is what makes an
-- event start at most one run of a workflow, however many serve processes see it and
-- however often one restarts (the run's idempotency key is derived from the event id).
-- outcome: started (run_id set), denied (the submit gate refused the start: run_id names
-- the denied run, recorded and never retried), failed (no run: the input did not render
-- or the workflow could not start; error says why, never retried).
CREATE TABLE warden.event_starts (
    tenant_id   text        NOT NULL,
    event_id    text        NOT NULL,
    workflow_id text        NOT NULL,
    event_name  text        NOT NULL,
    outcome     text        NOT NULL CONSTRAINT event_starts_outcome
                            CHECK (outcome IN ('started', 'denied', 'failed')),
    -- run_id names the run without a foreign key: `warden retention` archives runs and
    -- drops their rows (warden.retention_drop), and this row must stay, or the event
    -- could start the workflow again while it is kept (docs/dba.md)
    run_id      uuid,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, event_id, workflow_id),
    CONSTRAINT event_starts_run_iff_not_failed
        CHECK ((run_id IS NOT NULL) = (outcome <> 'failed'))
);
-- The event that started a run (`warden runs show`, the API's run document).
CREATE INDEX event_starts_by_run ON warden.event_starts (tenant_id, run_id)
    WHERE run_id IS NOT NULL;

GRANT SELECT, INSERT ON warden.event_triggers, warden.event_starts TO warden_engine;
GRANT UPDATE (workflow_version, input, active, since, updated_at)
    ON warden.event_triggers TO warden_engine;
GRANT SELECT ON warden.event_triggers, warden.event_starts TO warden_auditor;
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['event_triggers', 'event_starts'] LOOP
        EXECUTE format('ALTER TABLE warden.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('CREATE POLICY tenant_scope ON warden.%I TO warden_engine '
                       'USING (warden.in_scope(tenant_id)) '
                       'WITH CHECK (warden.in_scope(tenant_id))', v_table);
        EXECUTE format('CREATE POLICY audit_reads ON warden.%I FOR SELECT TO warden_auditor '
                       'USING (true)', v_table);
    END LOOP;
END $rls$;

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

RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Records an event and wakes the runs waiting for it (docs/workflows.md#events); the one
-- write path of warden.events, for the API, the CLI and SQL clients alike.
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
    END IF;
    RETURN QUERY SELECT v_row.event_id, v_row.name, v_row.key, v_row.data, v_row.sent_by,
                        v_row.received_at, v_row.expires_at, v_outcome;
END
$$;
DROP TABLE warden.event_starts;
DROP TABLE warden.event_triggers;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
