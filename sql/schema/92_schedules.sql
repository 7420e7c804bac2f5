-- Cron schedules (docs/workflows.md#schedules): a workflow's `schedules` start runs on
-- their ticks. One row per (tenant, workflow, schedule name), written when a version of
-- the workflow is stored and it is the newest (the newest version's schedules are the
-- ones in force; one it dropped stays, inactive, with its tick history). The cron loop of
-- `warden serve` (engine/daemons/cron.py) takes due rows with SKIP LOCKED, so any number
-- of serve processes share the work.
CREATE TABLE warden.schedules (
    tenant_id        text        NOT NULL,
    workflow_id      text        NOT NULL,
    name             text        NOT NULL,
    -- the stored version that declared the schedule as it is now
    workflow_version text        NOT NULL,
    cron             text        NOT NULL,
    timezone         text        NOT NULL,
    input            jsonb       NOT NULL DEFAULT '{}',
    overlap          text        NOT NULL CONSTRAINT schedules_overlap
                                 CHECK (overlap IN ('skip', 'allow', 'cancel_previous')),
    catch_up         text        NOT NULL CONSTRAINT schedules_catch_up
                                 CHECK (catch_up IN ('none', 'last', 'all')),
    -- false once the newest version no longer declares it
    active           boolean     NOT NULL DEFAULT true,
    paused           boolean     NOT NULL DEFAULT false,
    paused_by        text,
    paused_at        timestamptz,
    -- the first tick not yet handled; NULL until the cron loop first sees the row (it
    -- then starts from the next tick after its clock: no catch-up of time before)
    next_tick        timestamptz,
    last_tick        timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, name),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES warden.workflows (tenant_id, workflow_id, version)
);
-- The cron loop's work queue: due, active, not paused.
CREATE INDEX schedules_due ON warden.schedules (next_tick) WHERE active AND NOT paused;

-- One row per handled tick: the unique key is what makes a tick start at most one run,
-- however many serve processes meet it and however often one restarts (the run's
-- idempotency key is derived from the same tick). outcome: started (run_id set), skipped
-- (overlap: skip and a previous run still open).
CREATE TABLE warden.schedule_ticks (
    tenant_id     text        NOT NULL,
    workflow_id   text        NOT NULL,
    schedule_name text        NOT NULL,
    tick          timestamptz NOT NULL,
    outcome       text        NOT NULL CONSTRAINT schedule_ticks_outcome
                              CHECK (outcome IN ('started', 'skipped')),
    run_id        uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, schedule_name, tick),
    FOREIGN KEY (tenant_id, workflow_id, schedule_name)
        REFERENCES warden.schedules (tenant_id, workflow_id, name),
    -- run_id names the run without a foreign key: `warden retention` archives runs and
    -- the tick must stay, or a catch-up could start that tick again (docs/dba.md)
    CONSTRAINT schedule_ticks_run_iff_started CHECK ((run_id IS NOT NULL) = (outcome = 'started'))
);
-- A schedule's runs still open (overlap: skip, cancel_previous).
CREATE INDEX schedule_ticks_by_run ON warden.schedule_ticks (tenant_id, run_id)
    WHERE run_id IS NOT NULL;
