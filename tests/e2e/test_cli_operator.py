"""The CLI as an operator uses it at 3 a.m.: real processes, a real database."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.processes import REPO, Processes
from tests.e2e.test_cli import SEED, Cli

LONELY = """
id: lonely
name: one job, one attempt
version: 1.0.0
steps:
  escalate: {type: job, topic: job.incident.escalate, retries: {max_attempts: 1}}
  tell: {type: notify, depends_on: [escalate]}
"""


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(db_url, tmp_path)


def _wait(check: Any, what: str, tries: int = 300) -> Any:
    """Polls a CLI check (each call is a process, ~0.3 s) until it returns something."""
    for _ in range(tries):
        found = check()
        if found:
            return found
    raise AssertionError(f"never happened: {what}")


def _procs(cli: Cli, db_url: str) -> Processes:
    procs = Processes(db_url, Path(cli.env["WARDEN_DATA_DIR"]))
    procs.env["WARDEN_POLICY_DEFAULT"] = "allow"
    return procs


def test_migrate_on_a_missing_database_says_so_in_one_line_and_exits_6(
        cli: Cli, db_url: str) -> None:
    base, _, _name = db_url.rpartition("/")
    cli.env["WARDEN_DATABASE_URL"] = f"{base}/warden_no_such_database"
    done = cli.run("migrate", ok=False)
    assert done.returncode == 6, done.stderr
    assert done.stderr.startswith("warden: database unavailable")
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2


def test_a_stuck_then_failed_job_is_explained_and_acted_on_by_short_id(
        cli: Cli, db_url: str, tmp_path: Path) -> None:
    source = tmp_path / "lonely.yaml"
    source.write_text(LONELY)
    cli.run("workflows", "apply", str(source))
    run_id = cli.run("runs", "start", "lonely", "--input",
                     '{"incident_id": "INC-9", "behave": {"escalate": {"fail_attempts": 1}}}',
                     "--as", "alice").stdout.strip()
    short = run_id[:8]
    procs = _procs(cli, db_url)
    procs.serve()
    try:
        shown = _wait(lambda: (lambda doc: doc if doc["steps"][0]["note"]
                               else None)(cli.json("runs", "show", short)), "the dispatch")
        assert shown["steps"][0]["state"] == "pending"
        assert shown["run_id"] == run_id and shown["status"] == "running"
        text = cli.run("runs", "show", short).stdout
        assert "escalate" in text and " running " not in text
        assert "pending: no live worker polls topic job.incident.escalate" in text
        queues = cli.run("queues", "list").stdout
        assert "job.incident.escalate" in queues and "NO LIVE WORKER" in queues
        assert cli.run("workers", "list").stdout.strip() == "no live workers"
        worker = procs.worker("job.incident.escalate")
        failed = _wait(lambda: (lambda doc: doc if doc["status"] == "failed" else None)(
            cli.json("runs", "show", short)), "the failure")
        assert failed["summary"] == ("Failed at step escalate: RuntimeError: planned failure "
                                     "of attempt 1")
        text = cli.run("runs", "show", short).stdout
        assert "RuntimeError: planned failure of attempt 1" in text
        workers = [json.loads(line) for line in
                   cli.run("workers", "list", "--output", "jsonl").stdout.splitlines()]
        assert [(w["state"], w["topics"]) for w in workers] == [
            ("live", ["job.incident.escalate"])]
        worker.send_signal(signal.SIGTERM)  # a clean exit: its row says stopped
        assert worker.wait(timeout=30) == 0
        assert cli.json("workers", "list")["items"] == []
        gone = cli.json("workers", "list", "--all")["items"]
        assert [w["state"] for w in gone] == ["stopped"]
        # rerun: the plan first, then a question; no answer, or "n", starts nothing
        plan = cli.run("runs", "rerun", short, "--from", "escalate", ok=False)
        assert plan.returncode == 2 and "--yes" in plan.stderr
        assert "run:    escalate, tell" in plan.stderr
        declined = subprocess.run(
            [sys.executable, "-m", "engine.cli", "runs", "rerun", short, "--from", "escalate"],
            env=cli.env, input="n\n", capture_output=True, text=True, timeout=60, check=False)
        assert declined.returncode == 1 and "no rerun started" in declined.stderr
        assert len(cli.json("runs", "list")["items"]) == 1
        accepted = subprocess.run(
            [sys.executable, "-m", "engine.cli", "runs", "rerun", short, "--from", "escalate"],
            env=cli.env, input="y\n", capture_output=True, text=True, timeout=60, check=False)
        assert accepted.returncode == 0, accepted.stderr
        rerun_id = accepted.stdout.strip()
        listed = cli.json("runs", "list", "--id-prefix", rerun_id[:8])["items"]
        assert [r["rerun_of"] for r in listed] == [run_id]
        reruns = cli.json("runs", "list", "--rerun-of", run_id)["items"]
        assert [r["run_id"] for r in reruns] == [rerun_id]
        # cancel (no worker now, the rerun waits): what stops is shown first
        kept = subprocess.run(
            [sys.executable, "-m", "engine.cli", "runs", "cancel", rerun_id[:8]],
            env=cli.env, input="n\n", capture_output=True, text=True, timeout=60, check=False)
        assert kept.returncode == 1 and "not cancelled" in kept.stderr
        assert "would cancel escalate" in kept.stderr
        cancelled = cli.run("runs", "cancel", rerun_id[:8], "--yes", "--reason", "enough")
        assert cancelled.stdout.strip() == f"run {rerun_id} cancelled"
    finally:
        procs.stop_all()


def test_short_ids_resolve_and_an_ambiguous_prefix_lists_its_candidates(
        cli: Cli, db_url: str) -> None:
    cli.run("workflows", "apply", SEED)
    cli.run("runs", "start", "incident-remediation", "--as", "alice")
    with psycopg.connect(db_url, autocommit=True) as conn:
        for twin in ("abcd1111-0000-4000-8000-000000000000",
                     "abcd2222-0000-4000-8000-000000000000"):
            conn.execute(
                "INSERT INTO warden.runs (tenant_id, run_id, workflow_id, workflow_version, "
                "input, request_digest, created_by) SELECT tenant_id, %s, workflow_id, "
                "workflow_version, input, request_digest || %s, created_by FROM warden.runs "
                "LIMIT 1", [twin, twin])
    ambiguous = cli.run("runs", "show", "abcd", ok=False)
    assert ambiguous.returncode == 2
    assert "abcd1111-0000-4000-8000-000000000000" in ambiguous.stderr
    assert "abcd2222-0000-4000-8000-000000000000" in ambiguous.stderr
    assert cli.json("runs", "show", "abcd1")["run_id"].startswith("abcd1111")
    assert cli.json("runs", "show", "ABCD-2")["run_id"].startswith("abcd2222")
    missing = cli.run("runs", "show", "ffff0000", ok=False)
    assert missing.returncode == 3 and "no run id starts with 'ffff0000'" in missing.stderr
    bad = cli.run("runs", "show", "zz-top", ok=False)
    assert bad.returncode == 2 and "RUN_ID" in bad.stderr


def test_a_replayed_start_says_so_and_exits_as_the_first_call_did(cli: Cli) -> None:
    cli.run("workflows", "apply", SEED)
    first = cli.run("runs", "start", "incident-remediation", "--idempotency-key", "k1",
                    "--as", "alice")
    again = cli.run("runs", "start", "incident-remediation", "--idempotency-key", "k1",
                    "--as", "alice")
    assert again.stdout == first.stdout and "replayed" not in first.stderr
    assert "replayed: idempotency key 'k1' already started run" in again.stderr
    cli.env["WARDEN_POLICY_DEFAULT"] = "deny"
    denied = cli.run("runs", "start", "incident-remediation", "--idempotency-key", "k2",
                     "--as", "alice", ok=False)
    assert denied.returncode == 5 and "rule None" not in denied.stderr
    replayed = cli.run("runs", "start", "incident-remediation", "--idempotency-key", "k2",
                       "--as", "alice", "--json", ok=False)
    assert replayed.returncode == 5
    doc = json.loads(replayed.stdout)
    assert (doc["replayed"], doc["status"], doc["denied_by"]) == (True, "denied", "policy")
    assert "replayed" in replayed.stderr and "denied by policy at submit" in replayed.stderr
    by_policy = cli.json("runs", "list", "--status", "denied", "--denied-by", "policy")
    assert [r["run_id"] for r in by_policy["items"]] == [doc["run_id"]]
    assert cli.json("runs", "list", "--denied-by", "approval")["items"] == []


def test_approvals_show_what_they_let_run_and_a_rejection_needs_a_reason(
        cli: Cli, db_url: str) -> None:
    cli.run("workflows", "apply", SEED)
    run_id = cli.run("runs", "start", "incident-remediation", "--input",
                     '{"incident_id": "INC-7781"}', "--as", "alice").stdout.strip()
    procs = _procs(cli, db_url)
    procs.serve()
    procs.worker("job.incident.detect", "job.incident.classify", "job.incident.patch.plan",
                 "job.incident.host.check", "job.incident.patch.apply",
                 handler="engine.examples.handlers:handle")
    try:
        [approval] = _wait(lambda: cli.json("approvals", "list")["items"], "the gate")
        short = approval["approval_id"][:8]
        table = cli.run("approvals", "list").stdout
        assert short in table and run_id[:8] in table and "approval_gate" in table
        assert "expires" in table and "requested by alice" in table
        assert ("lets run: step approval_gate of incident-remediation@1.1.0, then "
                "apply_patch, notify") in table
        shown = cli.run("approvals", "show", short).stdout
        for expected in ("approval_gate", "it lets run", "INC-7781", "patch_plan",
                         "job hash", "(matches)", "policy     snapshot", "apply_patch",
                         "requested  by alice", "expires"):
            assert expected in shown, (expected, shown)
        doc = cli.json("approvals", "show", short)
        assert doc["lets_run"]["job_hash_matches"] is True
        assert [s["step_id"] for s in doc["lets_run"]["then"]] == ["apply_patch", "notify"]
        no_reason = cli.run("approvals", "reject", short, "--as", "bob", ok=False)
        assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
        blank = cli.run("approvals", "reject", short, "--as", "bob", "--reason", " ", ok=False)
        assert blank.returncode == 2 and "reason" in blank.stderr
        cli.run("approvals", "reject", short, "--as", "bob", "--reason", "too risky")
        rejected = _wait(lambda: (lambda d: d if d["status"] == "denied" else None)(
            cli.json("runs", "show", run_id[:8])), "the denial")
        assert rejected["denied_by"] == "approval"
        assert rejected["summary"] == ("Denied at step approval_gate: rejected by bob: "
                                       "too risky")
        assert cli.json("runs", "list", "--denied-by", "approval")["items"][0]["run_id"] == \
            run_id
        assert [r["run_id"] for r in cli.json(
            "runs", "list", "--match", "input.incident_id=INC-7781")["items"]] == [run_id]
        assert cli.json("runs", "list", "--match", "input.incident_id=INC-1")["items"] == []
    finally:
        procs.stop_all()


def test_watch_json_prints_json_lines_and_a_closed_pipe_is_no_error(
        cli: Cli, db_url: str) -> None:
    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate", "--as", "alice").stdout.strip()
    for n in range(3):
        cli.run("runs", "start", "gate", "--as", "alice", "--idempotency-key", f"more-{n}")
    watch = subprocess.Popen([sys.executable, "-m", "engine.cli", "runs", "watch", run_id[:8],
                              "--json"], env=cli.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    procs = _procs(cli, db_url)
    procs.serve()
    try:
        pending = _wait(lambda: [a for a in cli.json("approvals", "list")["items"]
                                 if a["run_id"] == run_id], "the gate")
        cli.run("approvals", "approve", pending[0]["approval_id"][:8], "--as", "bob")
        out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
        procs.stop_all()
    assert watch.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["kind"] == "run.created" and events[-1]["kind"] == "run.succeeded"
    assert "approval.approved" in [e["kind"] for e in events]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    # a reader that stops early: no BrokenPipeError, no traceback, exit 0 (stdout
    # block-buffered, as a user's shell has it, not line-buffered as under this suite)
    buffered = {k: v for k, v in cli.env.items() if k != "PYTHONUNBUFFERED"}
    for reader in ("head -1", "true"):
        piped = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m engine.cli runs list 2>err.txt | {reader}; "
                           "echo ${PIPESTATUS[0]} >status.txt"],
            env=buffered, cwd=cli.env["WARDEN_DATA_DIR"], capture_output=True, text=True,
            timeout=60, check=False)
        data_dir = Path(cli.env["WARDEN_DATA_DIR"])
        assert (data_dir / "err.txt").read_text() == "", reader
        assert (data_dir / "status.txt").read_text().strip() == "0", reader
        if reader == "head -1":
            assert len(piped.stdout.splitlines()) == 1
    listed = cli.run("runs", "list", "--output", "jsonl").stdout.splitlines()
    assert len(listed) == 4 and all(json.loads(line)["run_id"] for line in listed)


def test_cli_json_is_the_api_document(cli: Cli, db_url: str) -> None:
    import httpx

    from tests.e2e.processes import free_port

    cli.run("workflows", "apply", SEED)
    run_id = cli.run("runs", "start", "incident-remediation", "--input",
                     '{"incident_id": "INC-5"}', "--as", "alice").stdout.strip()
    cli.run("runs", "cancel", run_id, "--yes", "--as", "olga")  # at rest: nothing moves
    key = cli.run("keys", "create", "--role", "operator", "--name", "olga").stdout.strip()
    port = free_port()
    procs = _procs(cli, db_url)
    procs.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{port}",
                 WARDEN_SECRET_KEY=cli.env["WARDEN_SECRET_KEY"])
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        _wait(ready, "the API")
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=10) as api:
            for path, args in (
                    (f"/workflow-runs/{run_id}", ("runs", "show", run_id[:8])),
                    ("/workflow-runs?input.incident_id=INC-5",
                     ("runs", "list", "--match", "input.incident_id=INC-5")),
                    (f"/workflow-runs/{run_id}/timeline?limit=500", ("timeline", run_id)),
                    ("/workflows", ("workflows", "list")),
                    ("/workflows/incident-remediation",
                     ("workflows", "show", "incident-remediation"))):
                answered = api.get(path)
                assert answered.status_code == 200, answered.text
                assert cli.json(*args) == answered.json(), path
    finally:
        procs.stop_all()
