"""The bench's own database access: admin DDL and read-only measurement queries.

The engine is driven only through its public functions and processes; this module is
for what no engine function does (creating databases, reading pg_stat_*, percentiles).
Its SQL lives in `bench/queries.sql`, parsed by the engine's own named-query loader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from engine.store.sqlfiles import NamedQuery, parse_file

Conn = psycopg.AsyncConnection[dict[str, Any]]
Row = dict[str, Any]


@cache
def _queries() -> dict[str, NamedQuery]:
    return {q.name: q for q in parse_file(Path(__file__).with_name("queries.sql"))}


def with_database(url: str, database: str, application_name: str | None = None) -> str:
    """The admin URL pointed at another database (and named, so pg_stat_activity tells
    the bench's children apart)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"WARDEN_BENCH_DATABASE_URL must be a postgresql:// URL, got {url!r}")
    query = dict(parse_qsl(parts.query))
    if application_name is not None:
        query["application_name"] = application_name
    return urlunsplit(parts._replace(path=f"/{database}", query=urlencode(query)))


async def connect(url: str) -> Conn:
    return await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row,
                                                 connect_timeout=10)


async def rows(conn: Conn, name: str, params: Mapping[str, Any] | None = None) -> list[Row]:
    cur = await conn.execute(_queries()[name].sql, dict(params or {}))
    return await cur.fetchall() if cur.description else []


async def one(conn: Conn, name: str, params: Mapping[str, Any] | None = None) -> Row:
    found = await rows(conn, name, params)
    if len(found) != 1:
        raise RuntimeError(f"query {name} returned {len(found)} rows, expected one")
    return found[0]


async def execute(conn: Conn, name: str) -> None:
    await conn.execute(_queries()[name].sql)


async def try_execute(conn: Conn, name: str) -> bool:
    """For optional steps (CHECKPOINT needs superuser or pg_checkpoint): False if refused."""
    try:
        await execute(conn, name)
    except psycopg.errors.InsufficientPrivilege:
        return False
    return True


async def ddl(conn: Conn, name: str, /, **identifiers: str) -> None:
    """A named DDL statement whose {placeholders} are identifiers (never values)."""
    text = sql.SQL(_queries()[name].sql).format(
        **{key: sql.Identifier(value) for key, value in identifiers.items()})
    await conn.execute(text)


async def wait_for_backends_gone(conn: Conn, timeout_s: float = 5.0) -> None:
    """Children's backends flush their function statistics when they exit: wait for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if not [r for r in await rows(conn, "backends")
                if str(r["application_name"]).startswith("bench-")]:
            return
        await asyncio.sleep(0.1)
