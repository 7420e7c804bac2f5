"""The database clock and the worker-grant check as PL/pgSQL functions: as SQL functions
that read a table they could not be inlined, and PostgreSQL parsed and planned their
bodies again in every statement that called them (~50 us for warden.now(), ~70 us for
warden.granted(), in every claim, completion, start and scheduler query); PL/pgSQL keeps
their plans for the session (docs/design.md#sql-helpers-that-keep-their-plans).

Revision ID: 0032_helpers_keep_plans
Revises: 0031_run_ends
Create Date: 2026-12-07

Frozen. The functions are verbatim copies of sql/functions/now.sql, clock_timestamp.sql
and granted.sql as of this change; the downgrade restores their SQL versions. Same
names, arguments, results, volatility and privileges: every caller stays as it is.
"""

from alembic import op

revision = "0032_helpers_keep_plans"
down_revision = "0031_run_ends"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- The clock of every comparison the database makes: lease expiry, backoff, deadlines,
-- approval expiry, claimability. The transaction's now(), moved forward by the shift in
-- warden.clock (sql/schema/01_clock.sql), which only tests write.
--
-- PL/pgSQL, not SQL: a SQL function that reads a table cannot be inlined, and PostgreSQL
-- then parses and plans its body afresh in every statement that calls it (~50 us, more
-- than most statements it guards); PL/pgSQL keeps the plan for the session (~9 us a
-- statement, ~1 us more per extra row; docs/design.md#sql-helpers-that-keep-their-plans).
-- STABLE: one statement's calls agree, and an index scan may take it as a key.
CREATE OR REPLACE FUNCTION warden.now() RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN now() + coalesce((SELECT c.shift FROM warden.clock c), interval '0');
END
$$;
-- warden.now()'s wall-clock twin, for timeline events: each event's `at` is the moment
-- it was written (several events of one transaction are ordered in time), on the same
-- shifted clock as everything it is compared with. PL/pgSQL for the reason warden.now()
-- is (sql/functions/now.sql).
CREATE OR REPLACE FUNCTION warden.clock_timestamp() RETURNS timestamptz
LANGUAGE plpgsql VOLATILE PARALLEL SAFE AS $$
BEGIN
    RETURN clock_timestamp() + coalesce((SELECT c.shift FROM warden.clock c), interval '0');
END
$$;
-- Whether the session's login role may work on a job of this tenant and topic
-- (warden.worker_grants). session_user, not current_user: inside the SECURITY DEFINER
-- worker functions current_user is the owner, session_user is who logged in. PL/pgSQL for
-- the reason warden.now() is (sql/functions/now.sql): every claim and every fenced worker
-- write calls it.
CREATE OR REPLACE FUNCTION warden.granted(p_tenant text, p_topic text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM warden.worker_grants g
                    WHERE g.role_name = session_user::text
                      AND (g.tenant_id = '*' OR g.tenant_id = p_tenant)
                      AND p_topic LIKE g.topic_like);
END
$$;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
-- The clock of every comparison the database makes: lease expiry, backoff, deadlines,
-- approval expiry, claimability. The transaction's now(), moved forward by the shift in
-- warden.clock (sql/schema/01_clock.sql), which only tests write. STABLE, so a statement
-- reads it once.
CREATE OR REPLACE FUNCTION warden.now() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT now() + coalesce((SELECT c.shift FROM warden.clock c), interval '0')
$$;
-- warden.now()'s wall-clock twin, for timeline events: each event's `at` is the moment
-- it was written (several events of one transaction are ordered in time), on the same
-- shifted clock as everything it is compared with.
CREATE OR REPLACE FUNCTION warden.clock_timestamp() RETURNS timestamptz
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT clock_timestamp() + coalesce((SELECT c.shift FROM warden.clock c), interval '0')
$$;
-- Whether the session's login role may work on a job of this tenant and topic
-- (warden.worker_grants). session_user, not current_user: inside the SECURITY DEFINER
-- worker functions current_user is the owner, session_user is who logged in.
CREATE OR REPLACE FUNCTION warden.granted(p_tenant text, p_topic text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM warden.worker_grants g
                    WHERE g.role_name = session_user::text
                      AND (g.tenant_id = '*' OR g.tenant_id = p_tenant)
                      AND p_topic LIKE g.topic_like)
$$;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
