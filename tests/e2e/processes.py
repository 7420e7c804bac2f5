"""Starting `warden` processes for tests, with their output kept for post-mortems."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Processes:
    db_url: str
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def warden(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        name = f"{len(self.started):02d}-{args[0]}"
        proc_env = {**os.environ, "WARDEN_DATABASE_URL": self.db_url,
                    "PYTHONPATH": str(REPO), "WARDEN_POLL_INTERVAL_MS": "200",
                    # these tests are about mechanics; governance has its own tests
                    "WARDEN_POLICY_DEFAULT": "allow",
                    **self.env, **env}
        with (self.logs / f"{name}.log").open("wb") as log:  # the child keeps its own fd
            proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *args], cwd=REPO,
                                    env=proc_env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    def worker(self, *topics: str, concurrency: int = 4,
               handler: str = "tests.e2e.handlers:handle", **env: str) -> subprocess.Popen[bytes]:
        args = ["worker", "--handler", handler, "--concurrency", str(concurrency)]
        for topic in topics:
            args += ["--topic", topic]
        return self.warden(*args, **env)

    def serve(self) -> subprocess.Popen[bytes]:
        # each serve its own API port: two on one port would leave one engine, not two
        return self.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{free_port()}")

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def dump_logs(self) -> str:
        return "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.logs.glob("*.log")))
