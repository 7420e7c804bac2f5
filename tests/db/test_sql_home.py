"""sql/ is the one current definition of schema warden: a database migrated to head and
one built from sql/ alone (engine.store.schema.install_sql) have the same catalog —
function bodies and their settings, storage settings (fillfactor), views, triggers,
indexes, constraints, columns, enums, ownership, privileges and row-level security. A
revision that forgets to copy a change from sql/, or a change to sql/ that no revision
makes, fails here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from engine.store.schema import install_sql
from tests.dbprovision import Databases

# Each query returns sortable rows of text describing one kind of object of schema warden.
CATALOG: dict[str, str] = {
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid),
               pg_get_function_result(p.oid), p.prosrc, p.provolatile::text,
               p.prosecdef::text, coalesce(p.proconfig::text, ''),
               pg_get_userbyid(p.proowner), coalesce(p.proacl::text, ''), l.lanname
          FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
         WHERE p.pronamespace = 'warden'::regnamespace""",
    "relations": """
        SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner),
               coalesce(c.relacl::text, ''), c.relrowsecurity::text,
               c.relforcerowsecurity::text, coalesce(pg_get_partkeydef(c.oid), ''),
               coalesce(c.reloptions::text, '')
          FROM pg_class c WHERE c.relnamespace = 'warden'::regnamespace""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull::text, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
               a.attidentity::text, coalesce(a.attacl::text, '')
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = 'warden'::regnamespace AND a.attnum > 0
           AND NOT a.attisdropped""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'warden'""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
          FROM pg_constraint c WHERE c.connamespace = 'warden'::regnamespace""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid),
               t.tgenabled::text
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'warden'::regnamespace AND NOT t.tgisinternal
           AND t.tgname NOT LIKE 'warden\\_test\\_%'""",  # the guard of tests/state_guard.py
    "views": """
        SELECT viewname, definition FROM pg_views WHERE schemaname = 'warden'""",
    "enums": """
        SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder),
               pg_get_userbyid(t.typowner), coalesce(t.typacl::text, '')
          FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
         WHERE t.typnamespace = 'warden'::regnamespace GROUP BY t.oid""",
    "policies": """
        SELECT tablename, policyname, permissive, roles::text, cmd,
               coalesce(qual, ''), coalesce(with_check, '')
          FROM pg_policies WHERE schemaname = 'warden'""",
    "schema": """
        SELECT nspname, pg_get_userbyid(nspowner), coalesce(nspacl::text, '')
          FROM pg_namespace WHERE nspname IN ('warden', 'warden_partitions')""",
    # the months made ahead by warden.ensure_partitions (sql/grants/40_partitions.sql)
    "partitions": """
        SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner),
               coalesce(c.relacl::text, ''), i.inhparent::regclass::text,
               pg_get_expr(c.relpartbound, c.oid),
               (SELECT string_agg(t.tgname, ',' ORDER BY t.tgname) FROM pg_trigger t
                 WHERE t.tgrelid = c.oid AND NOT t.tgisinternal
                   AND t.tgname NOT LIKE 'warden\\_test\\_%')
          FROM pg_class c LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
         WHERE c.relnamespace = 'warden_partitions'::regnamespace""",
}


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {kind: sorted(conn.execute(query).fetchall())
                for kind, query in CATALOG.items()}


Catalogs = tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]]]


@pytest.fixture(scope="module")
def catalogs(_databases: Databases, migrated_template: str) -> Iterator[Catalogs]:
    """(migrated to head, built from sql/): one pair of databases for every comparison."""
    migrated = _databases.new_name("sqlhead")
    installed = _databases.new_name("sqlhome")
    migrated_url = _databases.create(migrated, template=migrated_template)
    installed_url = _databases.create(installed)
    with psycopg.connect(installed_url) as conn:
        conn.execute(install_sql())
    yield snapshot(migrated_url), snapshot(installed_url)
    _databases.drop(migrated)
    _databases.drop(installed)


@pytest.mark.parametrize("kind", sorted(CATALOG))
def test_migrated_head_and_sql_files_define_the_same_catalog(catalogs: Catalogs,
                                                             kind: str) -> None:
    migrated, installed = catalogs[0][kind], catalogs[1][kind]
    only_migrated = [row for row in migrated if row not in installed]
    only_in_sql = [row for row in installed if row not in migrated]
    assert (only_migrated, only_in_sql) == ([], []), (
        f"{kind} differ: the first list is only in the migrated database, the second only "
        "in sql/ — copy the change into a new revision (docs/contributing.md)")


def test_the_comparison_sees_what_it_compares(db_url: str, catalogs: Catalogs) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE OR REPLACE FUNCTION warden.now() RETURNS timestamptz "
                     "LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT now() $$")
        conn.execute("CREATE INDEX jobs_extra ON warden.jobs (created_at)")
        conn.execute("ALTER TABLE warden.runs ADD CONSTRAINT runs_extra CHECK (true)")
        conn.execute("REVOKE SELECT ON warden.runs FROM PUBLIC")
        conn.execute("GRANT SELECT ON warden.runs TO PUBLIC")
    changed = snapshot(db_url)
    # this month and three ahead, of the timeline and of policy_decisions, on both sides
    assert len(catalogs[0]["partitions"]) >= 8
    for kind in ("functions", "indexes", "constraints", "relations"):
        assert changed[kind] != catalogs[0][kind], kind
