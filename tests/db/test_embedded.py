"""The embedded server starts as whoever runs the suite (root included) and keeps its data.

Runs on every machine, whichever server the rest of the suite uses.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import engine
from engine.store.embedded import MIN_SERVER_VERSION, start_embedded

_REPO = Path(engine.__file__).resolve().parent.parent


def test_start_query_stop_and_restart_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "pg"
    server = start_embedded(data_dir)
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.server_version >= MIN_SERVER_VERSION
            assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
            conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2).close()

    again = start_embedded(data_dir)
    try:
        with psycopg.connect(again.url, autocommit=True) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(42,)]
    finally:
        again.stop()


_CHILD = """
import sys
from pathlib import Path
import psycopg
from engine.store.embedded import start_embedded
server = start_embedded(Path(sys.argv[1]))
with psycopg.connect(server.url) as conn:
    print(conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0].isoformat())
server.stop()
"""


def test_second_process_joins_the_running_server_and_leaves_it_running(
        tmp_path: Path) -> None:
    server = start_embedded(tmp_path / "pg")
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
            assert started is not None
            child = subprocess.run(
                [sys.executable, "-c", _CHILD, str(tmp_path / "pg")], cwd=_REPO,
                capture_output=True, text=True, timeout=60, check=False)
            assert child.returncode == 0, child.stderr
            # Same server, not a second one on the same files ...
            assert child.stdout.strip() == started[0].isoformat()
            # ... and the child's stop() did not stop it under us.
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
