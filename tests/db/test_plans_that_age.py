"""The pool makes a session's generic plans again once they are PLAN_REFRESH_S old, so a
plan made on a nearly empty table does not outlive the table's growth
(docs/design.md#plans-that-age).

A temporary table stands in for the hot path's tables: autovacuum never analyzes it, so
nothing but the pool's refresh can make its plan again, and the test is deterministic.
"""

from __future__ import annotations

import pytest

from engine.store import Database, connection
from engine.store.connection import Conn

pytestmark = pytest.mark.anyio


# The shape of the hot path's keyed writes: a (tenant, key) primary key, joined to arrays
# of keys (the run heads' update of warden.append_events_for_runs_unscoped, say).
_TABLE = "CREATE TEMP TABLE aging (t text, k integer, v integer, PRIMARY KEY (t, k))"
_TOUCH = ("PREPARE touch(text[], integer[]) AS UPDATE aging a SET v = v + 1"
          " FROM unnest($1, $2) AS x(t, k) WHERE a.t = x.t AND a.k = x.k")
_GROW = "INSERT INTO aging SELECT 'a', g, 0 FROM generate_series(1, 50000) AS g"


async def _plan(conn: Conn) -> str:
    cur = await conn.execute("EXPLAIN EXECUTE touch('{a,a}', '{1,2}')")
    return "\n".join(row[0] for row in await cur.fetchall())


async def test_a_plan_made_on_an_empty_table_is_made_again_after_the_period(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "PLAN_REFRESH_S", 3600.0)
    async with Database(db_url, min_size=1, max_size=1) as db:  # one session throughout
        async with db.connection() as conn:
            await conn.execute(_TABLE)
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await conn.execute(_TOUCH)
            assert "Seq Scan on aging" in await _plan(conn)  # what an empty table invites
            await conn.execute(_GROW)
        async with db.connection() as conn:
            # within the period the session keeps the empty table's plan: the trap is real
            assert "Seq Scan on aging" in await _plan(conn)
        monkeypatch.setattr(connection, "PLAN_REFRESH_S", 0.0)
        async with db.connection() as conn:
            plan = await _plan(conn)
            assert "Seq Scan on aging" not in plan
            assert "Index Scan using aging_pkey" in plan
            # the statement is still prepared: only its plan was dropped
            cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements"
                                     " WHERE name = 'touch'")
            assert await cur.fetchone() == (1,)


async def test_a_transaction_refreshes_the_plans_too(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "PLAN_REFRESH_S", 3600.0)
    async with Database(db_url, min_size=1, max_size=1) as db:
        async with db.connection() as conn:
            await conn.execute(_TABLE)
            await conn.execute(_TOUCH)  # prepared outside: planned in the transaction
        async with db.transaction(generic_plans=True) as conn:
            assert "Seq Scan on aging" in await _plan(conn)
            await conn.execute(_GROW)
        monkeypatch.setattr(connection, "PLAN_REFRESH_S", 0.0)
        async with db.transaction(generic_plans=True) as conn:
            assert "Index Scan using aging_pkey" in await _plan(conn)
