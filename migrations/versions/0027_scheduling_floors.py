"""Scheduling floors: runs.flag_seq, drawn under a shared advisory lock by every flag
of a run, the scheduler's queue index in that order, and warden.scheduling_floor
(docs/design.md#scheduling-floors). While an old snapshot was open, every scheduler pass
walked the entries of every flag cleared since (37 ms a pass after six minutes,
bench/README.md, session 10).

Revision ID: 0027_scheduling_floors
Revises: 0026_claim_floors
Create Date: 2026-12-06

Frozen. The functions and triggers are verbatim copies of sql/functions/
(runs_flag_lock, runs_flag_order, scheduling_floor) and sql/triggers/runs.sql as of this
change; the column, the constraint and the index are sql/schema/20_runs.sql's, added to
an existing table.
"""

from alembic import op

revision = "0027_scheduling_floors"
down_revision = "0026_claim_floors"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- (sql/schema/20_runs.sql) the column without a default first, so that adding it does
-- not rewrite the table; then the default for the rows to come
CREATE SEQUENCE warden.runs_flag_seq;
ALTER TABLE warden.runs ADD COLUMN flag_seq bigint;
ALTER TABLE warden.runs ALTER COLUMN flag_seq SET DEFAULT nextval('warden.runs_flag_seq');
ALTER SEQUENCE warden.runs_flag_seq OWNED BY warden.runs.flag_seq;
-- The trigger function of runs_flag_lock (sql/triggers/runs.sql), once per INSERT
-- statement on warden.runs, before any row: the shared lock of the scheduling floor,
-- held to commit, taken before the rows draw their flag_seq (the column's default). So
-- warden.scheduling_floor, which only tries the exclusive lock, never computes a floor
-- while a run flagged below it may still be uncommitted (docs/design.md#scheduling-floors).
-- SECURITY DEFINER, like the other trigger functions that only the owner's code should
-- reach; no grant.
CREATE OR REPLACE FUNCTION warden.runs_flag_lock() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('s' || chr(31) || 'runs', 14));
    RETURN NULL;
END $$;

-- The trigger function of runs_flag_order (sql/triggers/runs.sql): a run whose flag
-- (needs_scheduling) an UPDATE sets draws its place in the flagging order (flag_seq),
-- under the shared lock of the scheduling floor taken first and held to commit
-- (docs/design.md#scheduling-floors). Every way a run is flagged (warden.wake_run,
-- warden.send_event, complete_jobs, the reconciler, policy drift, a child's end) passes
-- through here, so none can forget it. SECURITY DEFINER: the sequence is the owner's.
CREATE OR REPLACE FUNCTION warden.runs_flag_order() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('s' || chr(31) || 'runs', 14));
    NEW.flag_seq := nextval('warden.runs_flag_seq');
    RETURN NEW;
END $$;

-- The scheduler's floor (docs/design.md#scheduling-floors): a flag_seq below which no
-- flagged run is, nor can be flagged later, or NULL when that cannot be known right now.
-- A scheduler passes the floor it had (p_from: every flagged run is at or above it) and
-- takes flagged runs from the answer up (runs_lock_for_scheduling), so it never walks
-- the index entries of the flags cleared since, which an old snapshot keeps.
--
-- Only when the exclusive advisory lock is free at once: every transaction that flags a
-- run holds the shared one from before it draws the run's flag_seq to its commit
-- (sql/triggers/runs.sql). With the lock, no such transaction is open, and the reads
-- below (READ COMMITTED: a snapshot taken after the lock) see every flag committed
-- before; any later flag draws a higher number. NULL when the lock is busy: the caller
-- keeps its floor. Waits for nothing. SECURITY DEFINER: it reads every tenant's runs and
-- the sequence; granted to the engine (the scheduler).
CREATE OR REPLACE FUNCTION warden.scheduling_floor(p_from bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_floor bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'warden.scheduling_floor must run in READ COMMITTED'
            USING ERRCODE = '25000',
                  HINT = 'its read must see every flag committed before the lock';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('s' || chr(31) || 'runs', 14)) THEN
        RETURN NULL;
    END IF;
    SELECT r.flag_seq INTO v_floor FROM warden.runs r
     WHERE r.needs_scheduling AND r.flag_seq >= p_from
     ORDER BY r.flag_seq LIMIT 1;
    IF v_floor IS NULL THEN
        -- nothing flagged: every number drawn so far belongs to a finished transaction
        SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END
          INTO v_floor FROM warden.runs_flag_seq s;
    END IF;
    RETURN v_floor;
END $$;

-- (sql/triggers/runs.sql)
-- Scheduling floors (docs/design.md#scheduling-floors): a run flagged for the scheduler
-- takes its place in the flagging order under the floor's shared lock. An INSERT takes
-- the lock once, before its rows draw flag_seq from the column's default; an UPDATE that
-- sets the flag draws a new one (the WHEN keeps every other update of runs, the timeline
-- heads of every claim and completion among them, free of it).
CREATE OR REPLACE TRIGGER runs_flag_lock
    BEFORE INSERT ON warden.runs
    FOR EACH STATEMENT
    EXECUTE FUNCTION warden.runs_flag_lock();
CREATE OR REPLACE TRIGGER runs_flag_order
    BEFORE UPDATE ON warden.runs
    FOR EACH ROW
    WHEN (NEW.needs_scheduling AND NOT OLD.needs_scheduling)
    EXECUTE FUNCTION warden.runs_flag_order();

-- The runs flagged now take their places, in (tenant, run) order, as the old index
-- handed them out. The triggers above took their lock on warden.runs: no run is being
-- flagged meanwhile, and every later flag passes through them.
UPDATE warden.runs SET flag_seq = nextval('warden.runs_flag_seq')
 WHERE run_id IN (SELECT run_id FROM warden.runs WHERE needs_scheduling
                   ORDER BY tenant_id, run_id);
ALTER TABLE warden.runs ADD CONSTRAINT runs_flagged_in_order
    CHECK (NOT needs_scheduling OR flag_seq IS NOT NULL);
DROP INDEX warden.runs_to_schedule;
-- The scheduler's work queue, in flagging order: tiny, because the flag is cleared right
-- after each pass; and while an old snapshot keeps the entries of cleared flags, they lie
-- before the scheduler's floor, where it never walks (docs/design.md#scheduling-floors).
CREATE INDEX runs_to_schedule ON warden.runs (flag_seq) WHERE needs_scheduling;
-- (sql/grants/20_privileges.sql)
GRANT EXECUTE ON FUNCTION warden.scheduling_floor(bigint) TO warden_engine;
GRANT USAGE ON SEQUENCE warden.runs_flag_seq TO warden_engine;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP TRIGGER runs_flag_lock ON warden.runs;
DROP TRIGGER runs_flag_order ON warden.runs;
DROP FUNCTION warden.scheduling_floor(bigint);
DROP FUNCTION warden.runs_flag_order();
DROP FUNCTION warden.runs_flag_lock();
DROP INDEX warden.runs_to_schedule;
ALTER TABLE warden.runs DROP CONSTRAINT runs_flagged_in_order;
ALTER TABLE warden.runs DROP COLUMN flag_seq;
CREATE INDEX runs_to_schedule ON warden.runs (tenant_id, run_id) WHERE needs_scheduling;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
