"""Database fixtures for the whole suite (docs/design.md#test-databases).

The server is chosen once per session by ``dbprovision.find_server`` and named in the
report header. The schema is migrated once into a template database; each test that asks
for ``db_url`` gets its own copy, dropped afterwards ``WITH (FORCE)`` so a test's leftover
connections, LISTENers or workers cannot block it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tests import roles, state_guard
from tests.dbprovision import Databases, NoServer, Server, find_server

_SERVER = pytest.StashKey[Server]()


def _server(config: pytest.Config) -> Server:
    if _SERVER not in config.stash:
        try:
            server = find_server()
        except NoServer as exc:
            pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
        config.stash[_SERVER] = server
        # Cleanups run at unconfigure, after every session fixture has been torn down.
        config.add_cleanup(server.stop)
    return config.stash[_SERVER]


def pytest_report_header(config: pytest.Config) -> list[str]:
    server = _server(config)
    lines = [f"database: {server.source}, PostgreSQL {server.version}"]
    lines += [f"  passed over {reason}" for reason in server.passed_over]
    return lines


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_server_url(pytestconfig: pytest.Config) -> str:
    """Admin URL of the chosen server; may create and drop databases."""
    return _server(pytestconfig).admin_url


@pytest.fixture(scope="session")
def _databases(pg_server_url: str) -> Iterator[Databases]:
    databases = Databases(pg_server_url)
    yield databases
    # The template, and any test database whose drop failed: nothing of ours stays behind
    # on a shared server.
    databases.drop_all()


@pytest.fixture(scope="session")
def migrated_template(_databases: Databases) -> str:
    """Name of a database migrated to head, to copy with CREATE DATABASE ... TEMPLATE, with
    the state-machine guard of tests/state_guard.py installed."""
    from engine.store.migrate import upgrade

    name = _databases.new_name("tmpl")
    url = _databases.create(name)
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        state_guard.install(conn)
        # the suite's own role claims as every worker it starts (tests of the grants
        # themselves connect as roles of their own: tests/db/test_least_privilege.py)
        conn.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                     "granted_by) VALUES (session_user, '*', '*', 'tests/conftest.py')")
    _databases.disconnect(name)
    return name


@pytest.fixture(scope="session")
def login_roles(pg_server_url: str, migrated_template: str) -> Iterator[roles.LoginRoles]:
    """A login role in each group role of docs/security.md (they exist once a database was
    migrated on the server), dropped at the end of the session."""
    yield from roles.create(pg_server_url)


@pytest.fixture
def db_url(_databases: Databases, migrated_template: str) -> Iterator[str]:
    """A fresh migrated database of this test's own."""
    name = _databases.new_name("db")
    yield _databases.create(name, template=migrated_template)
    _databases.drop(name)


@pytest.fixture
def empty_db_url(_databases: Databases) -> Iterator[str]:
    """A fresh database with no Warden schema, for migration up and down tests."""
    name = _databases.new_name("empty")
    yield _databases.create(name)
    _databases.drop(name)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
    aconn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        yield aconn
    finally:
        await aconn.close()
