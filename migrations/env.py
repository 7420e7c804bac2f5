"""Alembic environment shared by `warden migrate`, the tests and the plain `alembic` CLI.

A caller may pass an open SQLAlchemy connection in ``config.attributes["connection"]``
(the Alembic cookbook's "Sharing a Connection"); otherwise the URL comes from
``WARDEN_DATABASE_URL``. Revisions are frozen raw SQL, so no MetaData is needed here.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

VERSION_TABLE_SCHEMA = "public"

_VERSION_TABLE_READABLE = """
DO $grant$
BEGIN
    IF to_regclass('public.warden_alembic_version') IS NOT NULL
       AND (SELECT count(*) FROM pg_catalog.pg_roles
             WHERE rolname IN ('warden_engine', 'warden_worker', 'warden_auditor')) = 3 THEN
        GRANT SELECT ON public.warden_alembic_version
            TO warden_engine, warden_worker, warden_auditor;
    END IF;
END $grant$
"""


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        version_table="warden_alembic_version",
        version_table_schema=VERSION_TABLE_SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        # every Warden process checks the schema revision at start (engine/store/migrate.py):
        # the roles of docs/security.md may read which one it is, nothing more
        connection.exec_driver_sql(_VERSION_TABLE_READABLE)


def _sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def run_migrations_online() -> None:
    shared = context.config.attributes.get("connection")
    if shared is not None:
        _run(shared)
        return
    url = os.environ.get("WARDEN_DATABASE_URL")
    if not url:
        raise SystemExit("WARDEN_DATABASE_URL is not set; `warden migrate` also finds the "
                         "embedded server for you")
    engine = create_engine(_sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run(connection)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: revisions are raw SQL already")
run_migrations_online()
