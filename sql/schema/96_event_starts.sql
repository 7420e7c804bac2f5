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
