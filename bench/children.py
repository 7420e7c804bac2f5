"""Real `warden serve` and `warden worker` processes (and the peer's pgqueuer workers),
started and always stopped.

Each child connects under its own application_name (``bench-serve-1``, ``bench-worker-2``)
so pg_stat_activity attributes backends to it. Children run in their own session, so a
Ctrl-C in the terminal reaches only the bench, which then stops them in order; an
``atexit`` hook kills any child still alive however the bench exits.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import pg
from bench.cpu import process_cpu_s

REPO = Path(__file__).resolve().parents[1]
HANDLER = "bench.handlers:noop"
TOPIC = "bench.noop"

_alive: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_alive):
        if proc.poll() is None:
            proc.kill()


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    http_addr: tuple[str, int] | None = None  # a serve's API

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Children:
    """The processes of one measurement; use as a context manager."""

    url_as: Callable[[str], str]  # the database URL carrying a child's application_name
    logs: Path
    poll_interval_ms: int
    started: list[Child] = field(default_factory=list)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve(self) -> Child:
        # each serve also starts the HTTP API: give it a port nobody else holds
        port = _free_port()
        child = self._spawn("serve", ["serve"], WARDEN_HTTP_ADDR=f"127.0.0.1:{port}")
        child.http_addr = ("127.0.0.1", port)
        return child

    def worker(self, concurrency: int) -> Child:
        return self._spawn("worker", ["worker", "--topic", TOPIC, "--handler", HANDLER,
                                      "--concurrency", str(concurrency)])

    def peer(self, url: str, args: list[str]) -> Child:
        """A pgqueuer worker process of the peer (bench/peer_worker.py) on ``url``."""
        name = self._next_name("peer")
        return self._spawn("peer", ["--url", url, "--name", name, *args],
                           module="bench.peer_worker")

    def _next_name(self, role: str) -> str:
        index = 1 + sum(1 for c in self.started if c.name.startswith(f"bench-{role}-"))
        return f"bench-{role}-{index}"

    def _spawn(self, role: str, args: list[str], module: str = "engine.cli",
               **extra_env: str) -> Child:
        name = self._next_name(role)
        env = {**os.environ, **_child_env(self.url_as(name), self.poll_interval_ms, self.logs),
               **extra_env}
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO,
                                    env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        _alive.add(proc)
        child = Child(name, proc, log)
        self.started.append(child)
        return child

    async def wait_ready(self, conn: pg.Conn, timeout_s: float = 60.0) -> None:
        """Until every child holds its LISTEN connection (so it is idle-waiting)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        want = {c.name for c in self.started}
        while True:
            self.check_alive()
            listening = {r["application_name"] for r in await pg.rows(conn, "listeners")}
            if want <= listening:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"children not listening after {timeout_s}s: "
                                   f"{sorted(want - listening)}\n{self.log_tails()}")
            await asyncio.sleep(0.05)

    def check_alive(self) -> None:
        dead = [c for c in self.started if c.proc.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited with {dead[0].proc.returncode}:\n"
                               f"{dead[0].log_tail()}")

    def cpu_seconds(self) -> dict[str, float]:
        return {c.name: process_cpu_s(c.proc.pid) for c in self.started}

    def log_tails(self) -> str:
        return "\n".join(f"==== {c.name}\n{c.log_tail()}" for c in self.started)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (each finishes its pass and exits), then SIGKILL after the deadline."""
        for child in self.started:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.started:
            try:
                child.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            _alive.discard(child.proc)


def _child_env(url: str, poll_interval_ms: int, logs: Path) -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        "WARDEN_DATABASE_URL": url,
        "PYTHONPATH": pythonpath,
        "WARDEN_POLL_INTERVAL_MS": str(poll_interval_ms),
        # no policy is activated in the bench database; the default decides every gate
        # (and is still evaluated, recorded and chained like any other decision)
        "WARDEN_POLICY_DEFAULT": "allow",
        # serve's API needs a key; the bench must not create ~/.local/share/warden
        "WARDEN_SECRET_KEY": secrets.token_hex(32),
        "WARDEN_DATA_DIR": str(logs / "data"),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
