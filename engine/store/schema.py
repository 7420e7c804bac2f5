"""The current definition of schema ``warden``, as the files under ``sql/`` hold it.

``sql/schema/`` (types, tables, indexes, constraints; in file-name order), then
``sql/functions/`` (one function per file), ``sql/views/``, ``sql/triggers/`` and
``sql/grants/``. Together they are the one place to read what the database is now;
``migrations/`` holds the frozen steps that got a database there, and
tests/db/test_sql_home.py checks that a migrated database and one built from these files
have the same catalog (docs/contributing.md says how a schema change is made).
"""

from __future__ import annotations

from pathlib import Path

from engine.core.resources import data_dir

SECTIONS = ("schema", "functions", "views", "triggers", "grants")


def files() -> list[Path]:
    """Every definition file, in the order it must be applied."""
    root = data_dir("sql")
    return [path for section in SECTIONS for path in sorted((root / section).glob("*.sql"))]


def install_sql() -> str:
    """One script that builds the current schema in an empty database.

    Function bodies are not checked at creation (as pg_dump does), so functions may
    refer to each other in any file order; they are all checked when first called.
    """
    root = data_dir("sql")
    parts = ["SET LOCAL check_function_bodies = off;"]
    for path in files():
        parts.append(f"-- {path.relative_to(root.parent)}\n{path.read_text(encoding='utf-8')}")
    return "\n".join(parts)
