"""Control flow: ``sleep`` and ``wait_event`` steps, conditions and joins; events.

Revision ID: 0009_conditions_timers_events
Revises: 0007_retention_partitions
Create Date: 2026-12-06

Frozen. Adds the step types sleep and wait_event, the timeline kinds step.condition,
timer.started, timer.fired, wait.started, wait.matched, wait.timed_out and step.failed,
the step
columns wake_at, await_event and await_key (with their partial indexes), the table
warden.events (row-level security like every tenant table), warden.event_lock and
warden.send_event (docs/workflows.md#control-flow, #events).
"""

from alembic import op

revision = "0009_conditions_timers_events"
down_revision = "0007_retention_partitions"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- a downgrade cannot drop enum values: IF NOT EXISTS lets a re-upgrade meet them
ALTER TYPE warden.step_type ADD VALUE IF NOT EXISTS 'sleep';
ALTER TYPE warden.step_type ADD VALUE IF NOT EXISTS 'wait_event';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'step.condition';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'timer.started';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'timer.fired';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'wait.started';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'wait.matched';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'wait.timed_out';
ALTER TYPE warden.timeline_kind ADD VALUE IF NOT EXISTS 'step.failed';

ALTER TABLE warden.steps ADD COLUMN wake_at timestamptz,
    ADD COLUMN await_event text, ADD COLUMN await_key text;
CREATE INDEX steps_wake ON warden.steps (wake_at) WHERE status = 'waiting' AND wake_at IS NOT NULL;
CREATE INDEX steps_awaiting ON warden.steps (tenant_id, await_event, await_key)
    WHERE status = 'waiting' AND await_event IS NOT NULL;
GRANT UPDATE (wake_at, await_event, await_key) ON warden.steps TO warden_engine;

-- Events from the outside world (docs/workflows.md#events): what `wait_event` steps wait
-- for. Written only by warden.send_event (the API, `warden events send` and SQL clients
-- all go through it), which makes a repeated event_id one event, keeps each event until
-- expires_at for a wait that has not begun yet, and wakes the runs already waiting.
--
-- An event is a fact about its (name, key), not a message to one reader: it satisfies
-- every wait on its name and key that begins before it expires, or was waiting when it
-- came. What consumed it is recorded where the consumption happened (the waiting step's
-- wait.matched event), never here, so a later consumer — runs started by events, once per
-- event and workflow — can keep its own ledger keyed by (tenant_id, event_id, workflow_id)
-- without contending with this row.
CREATE TABLE warden.events (
    tenant_id   text        NOT NULL,
    event_id    text        NOT NULL CONSTRAINT events_id_length
                                CHECK (length(event_id) BETWEEN 1 AND 200),
    name        text        NOT NULL CONSTRAINT events_name_format
                                CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    key         text        NOT NULL CONSTRAINT events_key_length CHECK (length(key) <= 512),
    data        jsonb       NOT NULL DEFAULT 'null',
    -- sha256 of the canonical {name, key, data}: the same id with another digest is a
    -- conflict, with the same digest a replay
    digest      text        NOT NULL,
    sent_by     text        NOT NULL,
    received_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT events_data_size CHECK (octet_length(data::text) <= 262144),
    CONSTRAINT events_expire_after_receipt CHECK (expires_at >= received_at)
);
-- A wait's match: the oldest kept event of its name and key.
CREATE INDEX events_by_key ON warden.events (tenant_id, name, key, received_at);

ALTER TABLE warden.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_scope ON warden.events TO warden_engine
    USING (warden.in_scope(tenant_id)) WITH CHECK (warden.in_scope(tenant_id));
CREATE POLICY audit_reads ON warden.events FOR SELECT TO warden_auditor USING (true);
REVOKE ALL ON warden.events FROM PUBLIC;
GRANT SELECT ON warden.events TO warden_engine, warden_auditor;

-- The advisory lock that orders an event's arrival against a wait's beginning for one
-- (tenant, name, key), so neither can miss the other (docs/workflows.md#events):
-- warden.send_event takes it (waiting) before it inserts and wakes; the scheduler tries it
-- (never waiting, since it holds run locks that send_event may wait for) before a wait
-- step begins and looks for a kept event. Whichever commits second sees the first.
CREATE OR REPLACE FUNCTION warden.event_lock(p_tenant text, p_name text, p_key text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT hashtextextended('warden.event' || chr(31) || p_tenant || chr(31) || p_name
                            || chr(31) || p_key, 0)
$$;

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
GRANT EXECUTE ON FUNCTION warden.event_lock(text, text, text) TO warden_engine;
GRANT EXECUTE ON FUNCTION warden.send_event(text, text, text, text, jsonb, text, bigint)
    TO warden_engine, warden_worker;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP FUNCTION warden.send_event(text, text, text, text, jsonb, text, bigint);
DROP FUNCTION warden.event_lock(text, text, text);
DROP TABLE warden.events;
DROP INDEX warden.steps_wake;
DROP INDEX warden.steps_awaiting;
ALTER TABLE warden.steps DROP COLUMN wake_at, DROP COLUMN await_event,
    DROP COLUMN await_key;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
