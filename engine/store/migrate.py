"""Alembic, driven from code: `warden migrate`, the test suite and the start-up schema check.

The connection is passed to `migrations/env.py` through ``config.attributes`` so every
caller shares one code path (Alembic cookbook, "Sharing a Connection"). Alembic and
SQLAlchemy are imported only when migrating: the schema check every command runs at
start is one query against ``HEAD``, which a test pins to Alembic's own head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from engine.core.errors import ConfigError, DatabaseUnavailable, Forbidden, SchemaMismatch
from engine.core.resources import data_dir
from engine.store import sqlfiles

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine

HEAD = "0041_lease_role"

# The oldest server Warden is tested on (the schema needs at least 14 for CREATE OR
# REPLACE TRIGGER): an older one is refused when a command starts, with this message,
# not somewhere later on the first statement it cannot run.
MIN_SERVER_VERSION = 150000

# Revisions of the pre-release schema, squashed into 0001_baseline: a database still at
# one of them was made by a development build and has no upgrade path.
_SQUASHED = frozenset({
    "0001_core", "0002_governance", "0003_api_keys", "0004_recovery", "0005_release",
    "0006_batched_events", "0007_batched_completion", "0008_webhook_delivery",
    "0009_claim_per_topic"})


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def _engine(url: str) -> Engine:
    from sqlalchemy import create_engine, pool

    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
            break
    return create_engine(url, poolclass=pool.NullPool)


def require_server_version(version: int) -> None:
    """Refuse a server older than Warden needs (``version`` as libpq reports it)."""
    if version < MIN_SERVER_VERSION:
        raise ConfigError(
            f"the PostgreSQL server is version {version // 10000}; Warden needs "
            f"{MIN_SERVER_VERSION // 10000} or newer")


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (default: the newest)."""
    from alembic import command
    from sqlalchemy.exc import DBAPIError

    config = _config()
    try:
        with _engine(url).begin() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None, "an open SQLAlchemy connection has its driver's"
            require_server_version(driver.info.server_version)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except DBAPIError as exc:
        cause = exc.orig
        if isinstance(cause, psycopg.Error) and cause.sqlstate in ("42501", "WD403"):
            # a role that may not do what migrating needs (create the schema, the roles,
            # hand objects to warden_owner): say what, and what an administrator runs
            hint = cause.diag.message_hint
            raise Forbidden(f"warden migrate: {cause.diag.message_primary}"
                            + (f"; {hint}" if hint else "")) from exc
        raise


def downgrade(url: str, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (default: an empty schema)."""
    from alembic import command

    config = _config()
    with _engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str:
    """Alembic's own idea of the head (slow: parses every revision file)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(url: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            require_server_version(conn.info.server_version)
            present = conn.execute(sqlfiles.get("schema_version_table_exists").sql).fetchone()
            if present is None or not present[0]:
                return None
            row = conn.execute(sqlfiles.get("schema_revision").sql).fetchone()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
    return None if row is None or row[0] is None else str(row[0])


def require_head(url: str) -> None:
    """Refuse to run on an unmigrated or newer schema, saying what to do."""
    current = current_revision(url)
    if current == HEAD:
        return
    if current is None:
        raise SchemaMismatch("the database has no Warden schema: run `warden migrate` first")
    if current in _SQUASHED:
        raise SchemaMismatch(
            f"the database schema is at {current}, a pre-release revision with no upgrade "
            "path: recreate the database (`warden demo --reset` for the demo's data folder)")
    if current not in known_revisions():
        raise SchemaMismatch(
            f"the database schema is at {current}, newer than this Warden ({HEAD}): "
            "upgrade Warden")
    raise SchemaMismatch(f"the database schema is at {current}, not {HEAD}: run `warden migrate`")
