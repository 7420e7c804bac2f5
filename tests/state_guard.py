"""A guard installed in every test database: any status change of a run, step, job or
approval that engine/core/states.py does not list is refused, whoever makes it — a SQL
function, an engine module or a test. So the whole suite (and the chaos suite) checks the
SQL functions against the one table of moves, not only the Python maps derived from it.

It lives in schema warden_test, which production databases never have, and costs nothing
outside the tests.
"""

from __future__ import annotations

from typing import Any

import psycopg

from engine.core.states import MOVES

TABLES = {"runs": "run", "steps": "step", "jobs": "job", "approvals": "approval",
          "step_items": "item"}
SQLSTATE = "WT001"

_FUNCTION = """
CREATE FUNCTION warden_test.guard_move() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM warden_test.allowed_moves m
                    WHERE m.entity = TG_ARGV[0] AND m.source = OLD.status::text
                      AND m.target = NEW.status::text) THEN
        RAISE EXCEPTION '% % -> % is not a move of engine/core/states.py',
            TG_ARGV[0], OLD.status, NEW.status USING ERRCODE = 'WT001';
    END IF;
    RETURN NEW;
END $$"""


def install(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE SCHEMA warden_test")
    conn.execute("CREATE TABLE warden_test.allowed_moves (entity text, source text, "
                 "target text, PRIMARY KEY (entity, source, target))")
    with conn.cursor() as cur:
        # a move several modules make may be listed more than once (one line per reason)
        cur.executemany("INSERT INTO warden_test.allowed_moves VALUES (%s, %s, %s)",
                        sorted({(m.entity, m.source, m.target) for m in MOVES}))
    conn.execute(_FUNCTION)
    for table, entity in TABLES.items():
        conn.execute(
            f"CREATE TRIGGER warden_test_guard_moves BEFORE UPDATE OF status ON warden.{table} "
            "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
            f"EXECUTE FUNCTION warden_test.guard_move('{entity}')")
