"""The test databases themselves: a server new enough, migrated copies, real isolation."""

from __future__ import annotations

import psycopg
import pytest

from engine.store.migrate import current_revision, head_revision
from tests.dbprovision import MIN_VERSION, Databases, database_url


def test_chosen_server_answers_and_is_at_least_15(pg_server_url: str) -> None:
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.server_version >= MIN_VERSION


def test_db_url_is_migrated_to_head(db_url: str) -> None:
    assert current_revision(db_url) == head_revision()


@pytest.mark.parametrize("attempt", [1, 2])
def test_db_url_databases_are_isolated(db_url: str, attempt: int) -> None:
    # Each case finds no trace of the other, in whichever order they run.
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.isolation_probe')").fetchone() == (None,)
        conn.execute("CREATE TABLE public.isolation_probe (attempt int)")


def test_empty_db_url_has_no_schema(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('warden')").fetchone() == (None,)
        row = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()
    assert row == (0,)


@pytest.mark.anyio
async def test_conn_is_an_autocommit_connection_to_db_url(
        conn: psycopg.AsyncConnection[tuple[object, ...]], db_url: str) -> None:
    assert conn.autocommit
    cursor = await conn.execute("SELECT current_database()")
    assert await cursor.fetchone() == (db_url.rsplit("/", 1)[1].split("?")[0],)


def test_drop_all_sweeps_this_sessions_databases_only(pg_server_url: str) -> None:
    mine, other = Databases(pg_server_url), Databases(pg_server_url)
    kept = other.new_name("kept")
    other.create(kept)
    try:
        names = [mine.new_name("a"), mine.new_name("b")]
        for name in names:
            mine.create(name)
        assert sorted(mine.drop_all()) == sorted(names)
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            left = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                                ([*names, kept],)).fetchall()
        assert left == [(kept,)]
    finally:
        other.drop_all()


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://postgres@127.0.0.1:5432/x"),
    ("postgresql://postgres@/postgres?host=%2Ftmp%2Fpg&port=5432",
     "postgresql://postgres@/x?host=%2Ftmp%2Fpg&port=5432"),
    ("postgresql://u:p@h", "postgresql://u:p@h/x"),
])
def test_database_url_swaps_only_the_database(url: str, expected: str) -> None:
    assert database_url(url, "x") == expected
