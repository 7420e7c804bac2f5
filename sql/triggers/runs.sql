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
