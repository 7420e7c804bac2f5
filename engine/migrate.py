"""Alembic, driven from code: `warden migrate`, the test suite and `serve`'s schema check.

The connection is passed to `migrations/env.py` through ``config.attributes`` so every
caller shares one code path (Alembic cookbook, "Sharing a Connection").
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, pool

from engine.errors import SchemaMismatch
from engine.resources import data_dir

VERSION_TABLE = "warden_alembic_version"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(data_dir("migrations")))
    return config


def _engine(url: str) -> Engine:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
            break
    return create_engine(url, poolclass=pool.NullPool)


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (default: the newest)."""
    config = _config()
    with _engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Revert migrations down to ``revision`` (default: an empty schema)."""
    config = _config()
    with _engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def current_revision(url: str) -> str | None:
    with _engine(url).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE, "version_table_schema": "public"})
        return context.get_current_revision()


def require_head(url: str) -> None:
    """Refuse to run on an unmigrated or newer schema, saying what to do."""
    current, head = current_revision(url), head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaMismatch("the database has no Warden schema: run `warden migrate` first")
    known = {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}
    if current not in known:
        raise SchemaMismatch(
            f"the database schema is at {current}, newer than this Warden ({head}): upgrade Warden")
    raise SchemaMismatch(f"the database schema is at {current}, not {head}: run `warden migrate`")
