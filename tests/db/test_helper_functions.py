"""The SQL helpers every hot statement calls keep the form that costs the least
(docs/design.md#sql-helpers-that-keep-their-plans): a helper that reads a table is
PL/pgSQL, whose plans live for the session (as a SQL function PostgreSQL planned its body
again in every statement that called it), and a helper that reads no table is a SQL
function the planner inlines. Each test fails if a helper is rewritten out of its form."""

from __future__ import annotations

import psycopg
import pytest

from engine.store import Database
from tests import support

# read a table, called from claims, completions, starts and scheduler queries
PLPGSQL_HELPERS = ("now", "clock_timestamp", "granted", "granted_to")


def _explain(db_url: str, statement: str) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {statement}").fetchall()
    return "\n".join(r[0] for r in rows)


def test_helpers_that_read_a_table_are_plpgsql(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = dict(conn.execute(
            "SELECT p.proname, l.lanname FROM pg_proc p"
            "  JOIN pg_language l ON l.oid = p.prolang"
            " WHERE p.pronamespace = 'warden'::regnamespace AND p.proname = ANY(%s)",
            [list(PLPGSQL_HELPERS)]).fetchall())
    assert rows == dict.fromkeys(PLPGSQL_HELPERS, "plpgsql")


def test_the_fence_is_inlined_into_the_statement(db_url: str) -> None:
    """warden.lease_held is written into each worker write's WHERE clause: the plan
    filters on the job's own columns (the lease's role among them) and calls the PL/pgSQL
    helpers (warden.granted only for a lease from before the role was recorded), never
    the fence as a function of its own."""
    plan = _explain(db_url, "SELECT j.job_id FROM warden.jobs j WHERE warden.lease_held("
                            "j, '00000000-0000-0000-0000-000000000000')")
    assert "lease_held" not in plan
    assert "lease_token" in plan and "warden.now()" in plan
    assert "lease_role IS NULL" in plan and "SESSION_USER" in plan


@pytest.mark.parametrize(("call", "shows"), [
    ("warden.in_scope(v.t)", "current_setting"),
    ("warden.event_message('h', v.t, gen_random_uuid(), 1, now(), 'run.created', NULL,"
     " NULL, NULL, NULL, '{}')", "concat_ws"),
])
def test_scalar_helpers_without_a_table_are_inlined(db_url: str, call: str,
                                                     shows: str) -> None:
    plan = _explain(db_url, f"SELECT {call} FROM (VALUES ('a')) v(t)")
    name = call.split("(")[0]
    assert name not in plan and shows in plan


def test_the_claim_floor_is_inlined_as_a_query(db_url: str) -> None:
    plan = _explain(db_url, "SELECT * FROM warden.claim_floor('t', 'default', '', '')")
    assert "Function Scan" not in plan and "warden.claim_marks" in plan


@pytest.mark.anyio
async def test_the_plpgsql_clock_still_moves_with_the_shift(db: Database) -> None:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT warden.now() - now(), warden.clock_timestamp() - now()")
        before = await cur.fetchone()
    await support.advance_clock(db, 3600)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT extract(epoch FROM warden.now() - now()),"
                                 "       extract(epoch FROM warden.clock_timestamp() - now())")
        after = await cur.fetchone()
    assert before is not None and after is not None
    assert before[0].total_seconds() == 0
    assert float(after[0]) == 3600 and 3600 <= float(after[1]) < 3660
