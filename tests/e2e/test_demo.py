"""`warden demo` as a real process: the first-run experience of the README's quick start.

Each test reads the demo's own output (the URL, the key, the approval id it prints) and
acts on it the way a new user would: with the page's API, another `warden` process, or a
signal.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.processes import REPO, free_port

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
GATE = re.compile(rf"run ({UUID_RE}) is waiting at its approval gate\W+approval ({UUID_RE})")
KEY = re.compile(r"^\s+(wdn_[0-9a-f]{16}_\S+)$", re.M)
PAGE = re.compile(r"API ready in (\d+\.\d)s: operator page (http://\S+/ui)$", re.M)
STATUS_LINE = re.compile(r"^run \w+ \| ", re.M)
LOW = re.compile(rf"started run ({UUID_RE}) of incident-remediation for INC-7782 \(low")
HIGH = re.compile(rf"started run ({UUID_RE}) of incident-remediation for INC-7781 \(high")


class Demo:
    """A `warden demo` process whose output is read as it comes, so tests wait on it."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "demo", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._out: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed here: a pipe left open warns, and warnings fail
            for line in self.proc.stdout:
                self._out.append(line)

    @property
    def output(self) -> str:
        return "".join(self._out)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (found := pattern.search(self.output)) is None:
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"demo exited {self.proc.returncode} before printing "
                                     f"{pattern.pattern!r}:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern.pattern!r} after {timeout}s:\n{self.output}")
            time.sleep(0.05)
        return found

    def exit_code(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"demo still running after {timeout}s:\n{self.output}") from None
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)


@pytest.fixture
def demo_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "WARDEN_DATABASE_URL": db_url, "PYTHONPATH": str(REPO),
            "WARDEN_DATA_DIR": str(tmp_path / "data"),
            "WARDEN_HTTP_ADDR": f"127.0.0.1:{free_port()}"}


@pytest.fixture
def demos() -> Iterator[list[Demo]]:
    started: list[Demo] = []
    yield started
    for demo in started:
        demo.stop()


def _start(demos: list[Demo], env: dict[str, str], *args: str) -> Demo:
    demo = Demo(env, *args)
    demos.append(demo)
    return demo


def test_the_printed_url_and_key_decide_the_gate_over_the_api_and_the_demo_ends(
        demo_env: dict[str, str], demos: list[Demo]) -> None:
    demo = _start(demos, demo_env)
    ready = demo.wait_for(PAGE)
    key = demo.wait_for(KEY)[1]
    run_id, approval_id = demo.wait_for(GATE).groups()
    base = ready[2].removesuffix("/ui")
    assert ready[2] == f"http://{demo_env['WARDEN_HTTP_ADDR']}/ui"
    assert float(ready[1]) < 30  # printed from the command's start; the real budget is ~10 s

    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as http:
        page = http.get("/ui")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        pending = http.get("/api/v1/approvals", params={"status": "pending"})
        assert pending.status_code == 200, pending.text
        [item] = pending.json()["items"]
        assert (item["approval_id"], item["run_id"]) == (approval_id, run_id)
        decided = http.post(f"/api/v1/approvals/{approval_id}/approve",
                            json={"reason": "plan reviewed in the page"})
        assert decided.status_code == 200, decided.text
        assert decided.json()["decided_by"] == "demo-operator-1"

    assert demo.exit_code() == 0, demo.output
    out = demo.output
    assert f"run {run_id} finished: succeeded" in out
    assert "approval.approved" in out and "by demo-operator-1" in out
    assert "timeline chain verified: True" in out
    # not a terminal: one plain line per change, no cursor codes
    assert "\x1b" not in out and "\r" not in out
    lines = [ln for ln in out.splitlines() if STATUS_LINE.match(ln)]
    assert len(lines) >= 2, out
    assert all(a != b for a, b in itertools.pairwise(lines)), lines
    assert lines[-1].startswith("run succeeded | ")


def _timeline(db_url: str, run_id: str) -> list[tuple[str, str | None, Any]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT kind::text, step_id, data FROM warden.timeline "
                            "WHERE run_id = %s ORDER BY seq", (run_id,)).fetchall()


def _events(timeline: list[tuple[str, str | None, Any]], step: str,
            kind: str) -> list[Any]:
    return [data for k, s, data in timeline if (k, s) == (kind, step)]


def test_both_branches_and_the_for_each_are_in_the_runs_timelines(
        demo_env: dict[str, str], demos: list[Demo], db_url: str) -> None:
    """A fresh start runs a low-severity incident past the gate (its condition false) and
    a high-severity one through it; both join at apply_patch and fan out over 3 hosts."""
    demo = _start(demos, demo_env, "--approve")
    assert demo.exit_code() == 0, demo.output
    low, high = demo.wait_for(LOW)[1], demo.wait_for(HIGH)[1]
    out = demo.output
    assert f"run {low} finished: succeeded" in out and f"run {high} finished: succeeded" in out
    assert "approval_gate: skipped by its condition" in out
    assert "check_hosts: for_each over 3 items, 2 at a time" in out

    gate_when = "steps.classify.output.severity != 'low'"
    severity = "steps.classify.output.severity"
    for run_id, asked, sev in ((low, False, "low"), (high, True, "high")):
        timeline = _timeline(db_url, run_id)
        kinds = [k for k, _, _ in timeline]
        assert kinds[-1] == "run.succeeded", kinds
        assert _events(timeline, "check_hosts", "foreach.expanded") == [
            {"items": 3, "max_parallel": 2}]
        [cond] = _events(timeline, "approval_gate", "step.condition")
        assert cond == {"when": gate_when, "result": asked, "read": {severity: sev}}
        skipped = [d["because"] for d in _events(timeline, "approval_gate", "step.skipped")]
        assert skipped == ([] if asked else ["condition"])
        assert ("approval.requested" in kinds) is asked
        [join] = _events(timeline, "apply_patch", "step.condition")
        assert join["result"] is True
        assert join["read"]["steps.approval_gate.status"] == ("succeeded" if asked
                                                              else "skipped")
        assert len(_events(timeline, "apply_patch", "job.succeeded")) == 1, kinds


def test_sigterm_stops_at_once_and_the_next_start_resumes_the_run_with_a_new_key(
        demo_env: dict[str, str], demos: list[Demo]) -> None:
    first = _start(demos, demo_env)
    old_key = first.wait_for(KEY)[1]
    run_id, approval_id = first.wait_for(GATE).groups()
    first.proc.send_signal(signal.SIGTERM)
    began = time.monotonic()
    assert first.exit_code(timeout=15) == 0, first.output
    assert time.monotonic() - began < 5, "SIGTERM took too long"
    assert f"stopped; run {run_id} is waiting" in first.output
    host, port = demo_env["WARDEN_HTTP_ADDR"].split(":")
    with pytest.raises(OSError):  # the API stopped with it
        socket.create_connection((host, int(port)), timeout=1).close()

    second = _start(demos, demo_env)
    new_key = second.wait_for(KEY)[1]
    assert second.wait_for(GATE).groups() == (run_id, approval_id)
    assert f"resuming run {run_id}" in second.output
    base = second.wait_for(PAGE)[2].removesuffix("/ui")
    with httpx.Client(base_url=base, timeout=10) as http:
        url = f"/api/v1/approvals/{approval_id}"
        assert http.get(url, headers={"X-API-Key": old_key}).status_code == 401
        assert http.get(url, headers={"X-API-Key": new_key}).status_code == 200
    second.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert second.exit_code(timeout=15) == 0, second.output


def test_a_taken_port_is_named_and_exits_2_before_anything_starts(
        demo_env: dict[str, str], demos: list[Demo], db_url: str) -> None:
    host, port = demo_env["WARDEN_HTTP_ADDR"].split(":")
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        demo = _start(demos, demo_env)
        assert demo.exit_code(timeout=30) == 2, demo.output
    assert f"cannot listen on {host}:{port} (WARDEN_HTTP_ADDR)" in demo.output
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM warden.runs").fetchone() == (0,)


def test_exit_at_gate_exits_0_and_approve_runs_that_same_run_to_the_end(
        demo_env: dict[str, str], demos: list[Demo]) -> None:
    gate = _start(demos, demo_env, "--exit-at-gate")
    assert gate.exit_code() == 0, gate.output
    run_id, approval_id = GATE.search(gate.output).groups()  # type: ignore[union-attr]
    assert "demo --approve" in gate.output and "API ready" not in gate.output

    again = _start(demos, demo_env, "--exit-at-gate")
    assert again.exit_code() == 0, again.output
    assert f"resuming run {run_id}" in again.output and approval_id in again.output

    both = _start(demos, demo_env, "--approve", "--exit-at-gate")
    assert both.exit_code() == 2 and "not allowed with" in both.output

    approve = _start(demos, demo_env, "--approve")
    approve.wait_for(PAGE)  # it serves the page while it runs
    assert approve.exit_code() == 0, approve.output
    assert f"approved {approval_id} as demo-operator" in approve.output
    assert f"run {run_id} finished: succeeded" in approve.output


def test_on_the_embedded_server_another_warden_process_decides_the_gate(
        demo_env: dict[str, str], demos: list[Demo], tmp_path: Path) -> None:
    env = {k: v for k, v in demo_env.items() if k != "WARDEN_DATABASE_URL"}
    demo = _start(demos, env)
    run_id, approval_id = demo.wait_for(GATE, timeout=90).groups()
    pgdata = tmp_path / "data" / "pgdata"
    assert (pgdata / "postmaster.pid").exists()
    # the command the demo printed for another terminal, with the environment it names
    assert f"with WARDEN_DATA_DIR={env['WARDEN_DATA_DIR']}" in demo.output
    decided = subprocess.run(
        [sys.executable, "-m", "engine.cli", "approvals", "approve", approval_id,
         "--as", "ops-oncall", "--reason", "plan reviewed"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert decided.returncode == 0, decided.stderr
    assert demo.exit_code() == 0, demo.output
    assert f"run {run_id} finished: succeeded" in demo.output
    assert "by ops-oncall" in demo.output
    # the last user of the embedded server stopped it
    deadline = time.monotonic() + 15
    while (pgdata / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "the embedded server was left running"
        time.sleep(0.1)
