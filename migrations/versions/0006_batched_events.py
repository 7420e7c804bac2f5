"""append_events: a batch of one run's events in one call, the run row updated once.

Revision ID: 0006_batched_events
Revises: 0005_release
Create Date: 2026-11-25

Frozen. The scheduler buffers the events of a pass over a run (it holds the run's lock
for the whole pass) and writes them here: one round trip and one update of the run's
timeline head instead of one of each per event. Same chain, same seq rules as
append_event.
"""

from alembic import op

revision = "0006_batched_events"
down_revision = "0005_release"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- p_events: a JSON array of {kind, step_id, job_id, attempt, actor, data}, in order.
-- Returns the seq of the last event appended (0 for an empty array).
CREATE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_seq, v_prev
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := warden.event_hash(v_prev, p_tenant, p_run, v_seq, v_at, v_kind,
                                    e->>'step_id', e->>'job_id', (e->>'attempt')::integer,
                                    e->>'actor', coalesce(e->'data', '{}'));
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
"""

DOWNGRADE = r"""
DROP FUNCTION warden.append_events(text, uuid, jsonb);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
