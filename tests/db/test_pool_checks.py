"""The pool asks the server whether a connection is alive only when it has sat in the pool
longer than the alive window (engine/store/connection.py ALIVE_WINDOW_S): an older one
the server dropped is replaced at checkout; a fresh one is handed out without a round
trip, and if it broke all the same its statement fails once as "database unavailable"
and the pool replaces it.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from engine.core.errors import DatabaseUnavailable
from engine.store import Database
from engine.store.connection import Conn

pytestmark = pytest.mark.anyio


async def _pid(conn: Conn) -> int:
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _kill(db_url: str, pid: int) -> None:
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])


async def test_a_connection_idle_past_the_window_is_checked_and_replaced(db_url: str) -> None:
    async with Database(db_url, min_size=1, max_size=1, alive_window_s=0.05) as db:
        async with db.connection() as conn:
            first = await _pid(conn)
        _kill(db_url, first)
        await asyncio.sleep(0.1)  # past the window: the checkout asks the server
        async with db.connection() as conn:
            assert await _pid(conn) != first


async def test_a_connection_just_returned_is_handed_out_unchecked(db_url: str) -> None:
    async with Database(db_url, min_size=1, max_size=1, alive_window_s=3600.0) as db:
        async with db.connection() as conn:
            first = await _pid(conn)
        _kill(db_url, first)
        # within the window no round trip vouches for it: its statement meets the dead
        # session, and the caller gets the error it retries on
        with pytest.raises(DatabaseUnavailable):
            async with db.connection() as conn:
                await _pid(conn)
        # the broken connection was not put back: the next checkout has a new session
        async with db.connection() as conn:
            assert await _pid(conn) != first


async def test_a_connection_returned_inside_a_failed_transaction_is_still_usable(
        db_url: str) -> None:
    async with Database(db_url, min_size=1, max_size=1, alive_window_s=3600.0) as db:
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with db.transaction() as conn:
                await conn.execute("SELECT 1 / 0")
        # rolled back on its way into the pool, so within the window it is handed out
        # as it is, and works
        async with db.connection() as conn:
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
