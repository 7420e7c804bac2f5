-- What each role may do (docs/security.md). Nothing is granted to PUBLIC.
REVOKE ALL ON SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA warden FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA warden FROM PUBLIC;
GRANT USAGE ON SCHEMA warden TO warden_engine, warden_worker, warden_auditor;

-- ---------------------------------------------------------------- warden_worker
-- The job protocol and nothing else: no table privilege at all. Each function checks the
-- login role's grants (warden.worker_grants) and fences every write by the lease.
GRANT EXECUTE ON FUNCTION
    warden.claim_jobs(text[], text, integer, interval),
    warden.heartbeat_job(text, uuid, interval, jsonb),
    warden.complete_job(text, uuid, jsonb),
    warden.complete_jobs(text[], uuid[], jsonb[]),
    warden.fail_job(text, uuid, jsonb, boolean),
    warden.release_job(text, uuid, text),
    -- presence (docs/operating.md): a worker's own row of warden.workers
    warden.worker_register(text, text, integer, text[], integer, text, integer),
    warden.worker_heartbeat(uuid, integer), warden.worker_stop(uuid)
    TO warden_worker, warden_engine;

-- ---------------------------------------------------------------- warden_engine
-- `warden serve`: reads everything of the tenants in scope (row-level security,
-- sql/grants/30_row_security.sql), writes the state it moves, and only appends to the
-- audit records: never UPDATE, DELETE or TRUNCATE on the timeline or the policy records,
-- and it owns nothing, so it cannot disable a trigger. Timeline events are written only
-- by warden.append_events (SECURITY DEFINER), which computes the chain: the engine
-- cannot insert an event of its own making, nor move a run's timeline head; and, as
-- row-level security would, it appends only to runs of the tenants in the session's
-- scope. Its unscoped body (append_events_unscoped and the rest) is the job functions'
-- alone: no grant.
GRANT SELECT ON ALL TABLES IN SCHEMA warden TO warden_engine;
GRANT INSERT ON warden.workflows, warden.runs, warden.steps, warden.step_items, warden.jobs,
    warden.approvals,
    warden.notifications, warden.policy_snapshots, warden.policy_active,
    warden.policy_activations, warden.policy_decisions, warden.api_keys TO warden_engine;
-- the dispatch gate's plans (sql/schema/62_dispatch_plans.sql): inserted, never changed
GRANT INSERT ON warden.dispatch_plans TO warden_engine;
-- the start plans (sql/schema/63_start_plans.sql): inserted, never changed
GRANT INSERT ON warden.start_plans TO warden_engine;
GRANT UPDATE (status, output, error, started_at, finished_at, needs_scheduling)
    ON warden.runs TO warden_engine;
-- the ends a completion wrote, which a serve's observer takes (sql/schema/20_runs.sql);
-- only warden.complete_jobs (the owner) inserts them. UPDATE of finished_at because the
-- observer takes them FOR UPDATE SKIP LOCKED, which asks for an UPDATE privilege; the
-- column only orders the observer's queue (moving it moves when a metric is recorded,
-- as deleting the row, which the observer must do, already could)
GRANT DELETE, UPDATE (finished_at) ON warden.run_ends TO warden_engine;
GRANT UPDATE (status, attempts, max_attempts, retry_at, output, error, started_at,
              finished_at) ON warden.steps TO warden_engine;
-- the waits of sleep and wait_event steps (docs/workflows.md#control-flow)
GRANT UPDATE (wake_at, await_event, await_key) ON warden.steps TO warden_engine;
GRANT UPDATE (status, attempts, max_attempts, retry_at, output, error, started_at,
              finished_at) ON warden.step_items TO warden_engine;
-- never result, worker, lease_token or checkpoint: those are the lease holder's
GRANT UPDATE (status, policy_snapshot_hash, constraints, timeout_ms, available_at,
              finished_at, error, unclaimed_reported_at) ON warden.jobs TO warden_engine;
-- a decision only: who asked, for which run and job hash, is fixed at insert
GRANT UPDATE (status, decided_by, decided_at, reason) ON warden.approvals TO warden_engine;
GRANT UPDATE ON warden.notifications TO warden_engine;
GRANT UPDATE (snapshot_hash, activated_by, activated_at) ON warden.policy_active
    TO warden_engine;
GRANT UPDATE (revoked_at, last_used_at) ON warden.api_keys TO warden_engine;
-- cron schedules (docs/workflows.md#schedules): synced from the newest workflow version,
-- paused and resumed, their ticks recorded; a tick row is never changed
GRANT INSERT ON warden.schedules, warden.schedule_ticks TO warden_engine;
GRANT UPDATE (workflow_version, cron, timezone, input, overlap, catch_up, active, paused,
              paused_by, paused_at, next_tick, last_tick, updated_at)
    ON warden.schedules TO warden_engine;
-- event-started runs (docs/workflows.md#event-started-runs): subscriptions synced from
-- the newest workflow version; the ledger of what each event started is never changed
GRANT INSERT ON warden.event_triggers, warden.event_starts TO warden_engine;
GRANT UPDATE (workflow_version, input, active, since, updated_at)
    ON warden.event_triggers TO warden_engine;
GRANT EXECUTE ON FUNCTION
    warden.now(), warden.clock_timestamp(), warden.in_scope(text),
    warden.append_event(text, uuid, warden.timeline_kind, text, text, integer, text, jsonb),
    warden.append_events(text, uuid, jsonb), warden.append_events_for_runs(jsonb),
    warden.wake_run(text, uuid),
    warden.reap_expired_jobs(integer, interval), warden.verify_timeline(uuid),
    -- SECURITY INVOKER: it writes with the engine's own privileges, under its row security
    warden.start_planned_run(text, text, text, uuid, jsonb, text, text, smallint, text, jsonb)
    TO warden_engine;
-- claim floors (sql/schema/22_claim_marks.sql): `warden serve` raises them; the marks
-- themselves are the owner's functions' alone (a floor set too high would hide jobs)
GRANT EXECUTE ON FUNCTION warden.advance_claim_marks() TO warden_engine;
REVOKE ALL ON warden.claim_marks FROM warden_engine;
-- scheduling floors (docs/design.md#scheduling-floors): the scheduler asks for its floor;
-- a run the engine inserts draws its flag_seq from the sequence (the column's default)
GRANT EXECUTE ON FUNCTION warden.scheduling_floor(bigint) TO warden_engine;
GRANT USAGE ON SEQUENCE warden.runs_flag_seq TO warden_engine;
-- `warden serve` keeps the partitions of the months ahead (it can only add empty ones);
-- detaching and dropping them, retention, stays the owner's (docs/dba.md).
GRANT EXECUTE ON FUNCTION warden.ensure_partitions(integer) TO warden_engine;
-- events (docs/workflows.md#events): written only through send_event, which checks the
-- caller's tenant itself; a SQL client's role needs an 'event.<name>' worker grant
GRANT EXECUTE ON FUNCTION warden.event_lock(text, text, text) TO warden_engine;
GRANT EXECUTE ON FUNCTION warden.send_event(text, text, text, text, jsonb, text, bigint)
    TO warden_engine, warden_worker;

-- ---------------------------------------------------------------- warden_auditor
-- Read-only: the records an audit reads, across tenants (docs/dba.md).
GRANT SELECT ON warden.timeline, warden.policy_decisions, warden.policy_snapshots,
    warden.policy_activations, warden.policy_active, warden.approvals, warden.runs,
    warden.steps, warden.step_items, warden.jobs, warden.workflows, warden.workers,
    warden.archived_runs, warden.events, warden.schedules, warden.schedule_ticks,
    warden.event_triggers, warden.event_starts, warden.dispatch_plans, warden.start_plans
    TO warden_auditor;
GRANT EXECUTE ON FUNCTION warden.verify_timeline(uuid), warden.now(),
    warden.in_scope(text) TO warden_auditor;

-- ---------------------------------------------------------------- the keyed chain
-- The chain key (warden.chain_keys), event_hash (a MAC of anything), rotate_chain_key and
-- the timeline_check view stay the owner's: no grant. Checking needs no key in hand;
-- timeline_problems answers an engine session about the tenants in its scope only, and
-- everyone row-level security shows every tenant about all (warden.sees_every_tenant,
-- which only the definer functions call: no grant).
REVOKE ALL ON warden.chain_keys, warden.timeline_check FROM warden_engine;
GRANT EXECUTE ON FUNCTION
    warden.timeline_problems(text, uuid), warden.canonical_json(jsonb),
    warden.event_message(text, text, uuid, bigint, timestamptz, warden.timeline_kind, text,
                         text, integer, text, jsonb),
    warden.job_hash(text, uuid, text, text, jsonb, jsonb, jsonb)
    TO warden_engine, warden_auditor;
GRANT SELECT ON warden.job_evidence, warden.approval_evidence,
    warden.policy_activation_evidence TO warden_engine, warden_auditor;
