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


# The order the pool hands connections out in (engine/store/connection.py
# _LastInFirstOutPool): the one returned last goes first, so a light load stays on the
# sessions it needs and they stay warm.

async def test_a_light_load_keeps_to_one_session(db_url: str) -> None:
    async with Database(db_url, min_size=3, max_size=3) as db:
        seen = []
        for _ in range(6):
            async with db.connection() as conn:
                seen.append(await _pid(conn))
        # first in, first out would have handed out all three in turn
        assert len(set(seen)) == 1


async def test_the_connection_returned_last_is_handed_out_first(db_url: str) -> None:
    async with Database(db_url, min_size=3, max_size=3) as db:
        held: list[tuple[Conn, int]] = []
        for _ in range(3):
            conn = await db._pool.getconn()
            held.append((conn, await _pid(conn)))
        for conn, _ in held:  # returned first to last: a, b, c
            await db._pool.putconn(conn)
        (_, a), (_, b), (_, c) = held
        async with db.connection() as first:
            assert await _pid(first) == c
            async with db.connection() as second:
                assert await _pid(second) == b
        # the queue's head is still the connection idle longest, the one the pool's
        # shrink closes after max_idle: the override turned the queue only to take from it
        assert await _pid(db._pool._pool[0]) == a
