-- Approvals (sql/schema/30_approvals.sql): who may never decide one is fixed at insert,
-- from the rerun chain of its run; what it is about never changes afterwards, and once
-- decided, expired or superseded it does not change at all.
CREATE OR REPLACE TRIGGER approvals_bar_rerun_chain BEFORE INSERT ON warden.approvals
    FOR EACH ROW EXECUTE FUNCTION warden.approval_bar_rerun_chain();
CREATE OR REPLACE TRIGGER approvals_frozen BEFORE UPDATE ON warden.approvals
    FOR EACH ROW EXECUTE FUNCTION warden.approval_frozen();
