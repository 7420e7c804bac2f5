"""The `warden` command line, run as a real process against a real database."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.e2e.processes import REPO
from tests.roles import LoginRoles, as_role

SEED = str(REPO / "engine/examples/incident-remediation.yaml")
POLICY = str(REPO / "engine/examples/demo-policy.yaml")


class Cli:
    def __init__(self, db_url: str, tmp: Path) -> None:
        self.env = {**os.environ, "WARDEN_DATABASE_URL": db_url, "PYTHONPATH": str(REPO),
                    "WARDEN_DATA_DIR": str(tmp), "WARDEN_SECRET_KEY": "k" * 40,
                    "WARDEN_POLICY_DEFAULT": "allow"}

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "engine.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, check=False)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(db_url, tmp_path)


def test_a_script_drives_a_run_without_the_api(cli: Cli) -> None:
    assert cli.run("workflows", "apply", SEED).stdout.strip() == "incident-remediation 1.1.0"
    assert "unchanged" in cli.run("workflows", "apply", SEED).stdout
    listed = cli.json("workflows", "list")["items"]
    assert [w["workflow_id"] for w in listed] == ["incident-remediation"]
    cli.run("policy", "apply", POLICY, "--activate", "--as", "admin")
    shown = cli.json("policy", "show")
    assert shown["active"] and shown["snapshots"][0]["snapshot_hash"] == shown["active"]
    decision = cli.json("policy", "evaluate", "--topic", "job.incident.patch.apply")
    assert (decision["decision"], decision["rule"]) == ("allow_with_constraints",
                                                        "patch-apply-bounded")
    run_id = cli.run("runs", "start", "incident-remediation", "--input",
                     '{"incident_id": "INC-1"}', "--idempotency-key", "k1",
                     "--as", "alice").stdout.strip()
    replay = cli.json("runs", "start", "incident-remediation", "--input",
                      '{"incident_id": "INC-1"}', "--idempotency-key", "k1", "--as", "alice")
    assert (replay["run_id"], replay["replayed"]) == (run_id, True)
    run = cli.json("runs", "show", run_id)
    # the start dispatched the first step in its own transaction: no scheduler ran here
    assert run["status"] == "running" and run["steps"][0]["step_id"] == "detect"
    assert run["steps"][0]["state"] == "pending" and run["jobs"][0]["status"] == "pending"
    assert [r["run_id"] for r in cli.json("runs", "list")["items"]] == [run_id]
    cancelled = cli.run("runs", "cancel", run_id, "--reason", "test", "--as", "olga", "--yes")
    assert "cancelled" in cancelled.stdout
    assert cli.json("runs", "show", run_id)["status"] == "cancelled"
    plan = cli.json("runs", "rerun", run_id, "--from-step", "classify", "--dry-run")
    assert plan["dry_run"] is True and "classify" in plan["to_run"]
    timeline = cli.json("timeline", run_id)["items"]
    assert timeline[0]["kind"] == "run.created" and timeline[-1]["kind"] == "run.cancelled"
    assert cli.run("audit", "verify", run_id).returncode == 0


def test_bad_input_gets_a_clear_message_and_a_script_friendly_exit_code(cli: Cli) -> None:
    cli.run("workflows", "apply", SEED)
    not_json = cli.run("runs", "start", "incident-remediation", "--input", "{oops", ok=False)
    assert not_json.returncode == 2 and "--input is not valid JSON" in not_json.stderr
    missing = cli.run("runs", "start", "nope", ok=False)
    assert missing.returncode == 3 and "'nope' not found" in missing.stderr
    bad_handler = cli.run("worker", "--topic", "t", "--handler", "nothing", ok=False)
    assert bad_handler.returncode == 2 and "--handler" in bad_handler.stderr
    cli.run("runs", "start", "incident-remediation", "--idempotency-key", "x", "--input", "{}")
    conflict = cli.run("runs", "start", "incident-remediation", "--idempotency-key", "x",
                       "--input", '{"other": 1}', ok=False)
    assert conflict.returncode == 4 and "Idempotency-Key" in conflict.stderr


def test_a_batch_file_starts_a_run_per_line_each_on_its_own(cli: Cli, tmp_path: Path) -> None:
    cli.run("workflows", "apply", SEED)
    batch = tmp_path / "runs.jsonl"
    batch.write_text('{"input": {"incident_id": "A"}, "idempotency_key": "a"}\n'
                     '{"input": [1]}\n\n'
                     '{"input": {"incident_id": "B"}}\n')
    done = cli.run("runs", "start", "incident-remediation", "--batch", str(batch),
                   "--as", "alice", ok=False)
    assert done.returncode == 2 and "line 2: input: must be a JSON object" in done.stderr
    assert len(done.stdout.split()) == 2  # the two good lines started their runs
    again = cli.run("runs", "start", "incident-remediation", "--batch", str(batch),
                    "--as", "alice", "--json", ok=False)
    lines = [json.loads(line) for line in again.stdout.splitlines()]
    assert [(x["line"], x.get("replayed")) for x in lines] == [(1, True), (2, None), (4, False)]
    assert len(cli.json("runs", "list")["items"]) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": {}, "colour": 1}\n')
    refused = cli.run("runs", "start", "incident-remediation", "--batch", str(bad), ok=False)
    assert refused.returncode == 2 and f"{bad}:1" in refused.stderr


def test_only_another_principal_can_approve_and_a_tampered_timeline_fails_audit(
        cli: Cli, db_url: str) -> None:
    import psycopg

    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate", "--as", "alice").stdout.strip()
    from tests.e2e.processes import Processes

    procs = Processes(db_url, Path(cli.env["WARDEN_DATA_DIR"]))
    procs.env["WARDEN_POLICY_DEFAULT"] = "allow"
    procs.serve()
    try:
        for _ in range(100):
            pending = cli.json("approvals", "list")["items"]
            if pending:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        [approval] = pending
        assert (approval["run_id"], approval["status"]) == (run_id, "pending")
        own = cli.run("approvals", "approve", approval["approval_id"], "--as", "alice", ok=False)
        assert own.returncode == 5 and "cannot decide" in own.stderr
        cli.run("approvals", "approve", approval["approval_id"], "--as", "bob", "--reason", "ok")
        assert cli.run("approvals", "approve", approval["approval_id"], "--as", "carol",
                       ok=False).returncode == 4
        # a rerun asks again, and alice, who started the original, cannot answer it
        for _ in range(100):
            if cli.json("runs", "show", run_id)["status"] == "succeeded":
                break
            subprocess.run(["sleep", "0.1"], check=True)
        plan = json.loads(cli.run("runs", "rerun", run_id, "--from-step", "ask", "--dry-run",
                                  "--json", "--as", "olga").stdout)
        assert (plan["approvals_needed"], plan["barred_approvers"]) == (["ask"],
                                                                         ["alice", "olga"])
        rerun_id = cli.run("runs", "rerun", run_id, "--from-step", "ask", "--yes",
                           "--as", "olga").stdout.strip()
        for _ in range(100):
            asked = cli.json("approvals", "list", "--status", "pending")["items"]
            if asked:
                break
            subprocess.run(["sleep", "0.1"], check=True)
        [again] = asked
        assert (again["run_id"], again["barred"]) == (rerun_id, ["alice", "olga"])
        chain = cli.run("approvals", "approve", again["approval_id"], "--as", "alice",
                        ok=False)
        assert chain.returncode == 5
        assert f"started run {run_id}, which run {rerun_id} reruns" in chain.stderr
    finally:
        procs.stop_all()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE warden.timeline SET actor = 'mallory' WHERE seq = 1")
    audit = cli.run("audit", "verify", ok=False)
    assert audit.returncode == 1 and "TAMPERED" in audit.stdout


def test_keys_are_shown_once_listed_without_secrets_and_revocable(cli: Cli) -> None:
    created = cli.json("keys", "create", "--role", "approver", "--name", "bob")
    assert created["key"].startswith("wdn_") and created["roles"] == ["approver"]
    listed = cli.run("keys", "list", "--json").stdout
    assert created["key"] not in listed and created["key_id"] in listed
    assert "revoked" in cli.run("keys", "revoke", created["key_id"]).stdout
    again = cli.run("keys", "revoke", created["key_id"], ok=False)
    assert again.returncode == 3
    duplicate = cli.run("keys", "create", "--role", "admin", "--name", "bob", ok=False)
    assert duplicate.returncode == 4


def test_without_a_policy_the_default_denies_and_says_so(cli: Cli) -> None:
    cli.env["WARDEN_POLICY_DEFAULT"] = "deny"
    cli.run("workflows", "apply", SEED)
    denied = cli.run("runs", "start", "incident-remediation", ok=False)
    assert denied.returncode == 5
    assert "denied by policy at submit" in denied.stderr
    assert "no policy is active for this tenant (default: deny)" in denied.stderr


def test_runs_watch_follows_a_run_live_until_it_ends(cli: Cli, db_url: str) -> None:
    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate", "--as", "alice").stdout.strip()
    watch = subprocess.Popen([sys.executable, "-m", "engine.cli", "runs", "watch", run_id],
                             env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    from tests.e2e.processes import Processes

    procs = Processes(db_url, Path(cli.env["WARDEN_DATA_DIR"]))
    procs.env["WARDEN_POLICY_DEFAULT"] = "allow"
    procs.serve()
    try:
        pending: list[Any] = []
        for _ in range(200):
            pending = cli.json("approvals", "list")["items"]
            if pending:
                break
        cli.run("approvals", "approve", pending[0]["approval_id"], "--as", "bob")
        out, err = watch.communicate(timeout=60)
    finally:
        watch.kill()
        procs.stop_all()
    assert watch.returncode == 0, err
    lines = out.splitlines()
    assert "run.created" in lines[0] and "approval.approved" in out
    assert lines[-1] == f"run {run_id} succeeded"


def test_runs_watch_on_a_terminal_keeps_the_steps_in_view_below_the_timeline(
        cli: Cli) -> None:
    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate", "--as", "alice").stdout.strip()
    terminal, child_end = pty.openpty()
    watch = subprocess.Popen([sys.executable, "-m", "engine.cli", "runs", "watch", run_id],
                             env=cli.env, stdin=subprocess.DEVNULL, stdout=child_end,
                             stderr=subprocess.DEVNULL)
    os.close(child_end)
    seen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        # the start dispatched in its own transaction: the approval step already waits
        while b"run waiting | ask:waiting" not in b"".join(seen):
            assert time.monotonic() < deadline and watch.poll() is None, b"".join(seen)
            time.sleep(0.05)
        cli.run("runs", "cancel", run_id, "--as", "olga", "--yes")
        assert watch.wait(timeout=30) == 1
        reader.join(timeout=5)
    finally:
        watch.kill()
        os.close(terminal)
    out = b"".join(seen).decode()
    # redrawn in place below the timeline, then left on screen above the final word
    assert "\r\x1b[2Krun waiting | ask:waiting" in out
    assert "run.created" in out and "run.cancelled" in out
    assert out.rstrip().endswith(f"run {run_id} cancelled")


# --- values no column can hold: exit 2 naming the field, nothing stored ----------------------

BIG = "9" * 4301  # one digit past Python's limit for int <-> str
NOT_UTF8 = "\udcff"  # what a non-UTF-8 argument byte (0xFF) becomes in sys.argv (PEP 383)
HOSTILE_WORKFLOW_YAML = ("id: hostile\nname: H\nversion: 1.0.0\nsteps:\n  only:\n"
                         "    type: job\n    topic: job.hostile\n    input: {x: .nan}\n")
HOSTILE_WORKFLOW_JSON = ('{"id": "hostile", "name": "\\ud800", "version": "1.0.0", "steps": '
                         '{"only": {"type": "job", "topic": "job.hostile"}}}')
# id -> (argv, with FILE standing for a file holding the text below; file suffix; text;
#        what stderr must name)
CLI_CASES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    **{f"{word} in a run input": (("runs", "start", "incident-remediation", "--input",
                                   f'{{"x": {{"y": [{word}]}}}}'), "", "", "input.x.y[0]")
       for word in ("NaN", "Infinity", "-Infinity", "1e400")},
    "huge integer in a run input": (("runs", "start", "incident-remediation", "--input",
                                     f'{{"n": {BIG}}}'), "", "", "input.n"),
    "surrogate in a run input": (("runs", "start", "incident-remediation", "--input",
                                  '{"x": "\\ud800"}'), "", "", "input.x"),
    "NaN in evaluated input": (("policy", "evaluate", "--topic", "job.x", "--input",
                                '{"x": NaN}'), "", "", "input.x"),
    "a list as evaluated input": (("policy", "evaluate", "--topic", "job.x", "--input", "[1]"),
                                  "", "", "input"),
    "YAML .nan in a workflow": (("workflows", "apply", "FILE"), ".yaml", HOSTILE_WORKFLOW_YAML,
                                "steps.only.input.x"),
    "surrogate as a JSON workflow name": (("workflows", "apply", "FILE"), ".json",
                                          HOSTILE_WORKFLOW_JSON, "name"),
    "huge integer in a JSON workflow": (
        ("workflows", "apply", "FILE"), ".json",
        HOSTILE_WORKFLOW_JSON.replace('"\\ud800"', f'"H", "timeout_ms": {BIG}'), "timeout_ms"),
    "YAML .inf as a policy name": (("policy", "apply", "FILE"), ".yaml",
                                   "default_decision: allow\nname: .inf\n", "name"),
    "surrogate as a JSON rule name": (
        ("policy", "apply", "FILE"), ".json",
        '{"default_decision": "allow", "rules": [{"name": "\\udfff", "decision": "deny", '
        '"reason": "r", "match": {"topics": ["job.x"]}}]}', "rules[0].name"),
    "non-UTF-8 cancel reason": (("runs", "cancel", "RUN", "--reason", f"a{NOT_UTF8}"),
                                "", "", "--reason"),
    "non-UTF-8 approve reason": (("approvals", "approve", "00000000-0000-0000-0000-000000000001",
                                  f"--reason=x{NOT_UTF8}"), "", "", "--reason"),
}


def table_digests(db_url: str) -> dict[str, Any]:
    """Every warden table but the keys: row count and a digest of its rows."""
    with psycopg.connect(db_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'warden' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " AND c.relname <> 'api_keys' ORDER BY 1").fetchall()]
        return {t: conn.execute(sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
            " FROM warden.{} t").format(sql.Identifier(t))).fetchone() for t in tables}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_a_value_no_column_can_hold_exits_2_naming_the_field(
        cli: Cli, db_url: str, tmp_path: Path, case: str) -> None:
    argv, suffix, text, field = CLI_CASES[case]
    if "RUN" in argv:  # a run to (not) cancel
        cli.run("workflows", "apply", SEED)
        run_id = cli.run("runs", "start", "incident-remediation").stdout.strip()
        argv = tuple(run_id if a == "RUN" else a for a in argv)
    if "FILE" in argv:
        path = tmp_path / f"hostile{suffix}"
        path.write_text(text)
        argv = tuple(str(path) if a == "FILE" else a for a in argv)
    before = table_digests(db_url)
    done = cli.run(*argv, ok=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert field in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert table_digests(db_url) == before


def test_anchors_catch_a_chain_re_signed_with_the_database_key(
        cli: Cli, db_url: str, tmp_path: Path) -> None:
    import psycopg

    from tests.db.test_keyed_chain import FORGE_SEQ_1, RECOMPUTE_KEYED

    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate", "--as", "alice").stdout.strip()
    anchors_dir = tmp_path / "anchors"
    no_dir = cli.run("audit", "anchor", ok=False)
    assert no_dir.returncode == 2 and "WARDEN_AUDIT_ANCHOR_DIR" in no_dir.stderr
    assert "at line 1" in cli.run("audit", "anchor", "--dir", str(anchors_dir)).stdout
    assert cli.json("audit", "anchor", "--dir", str(anchors_dir))["line"] is None
    rotated = cli.json("audit", "rotate-key")["key_id"]
    clean = cli.json("audit", "verify", "--anchors", str(anchors_dir))
    assert clean["broken"] == [] and clean["anchors"]["problems"] == []
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(FORGE_SEQ_1, {"run": run_id})
        conn.execute(RECOMPUTE_KEYED.replace("%(run)s", f"'{run_id}'"))
        assert conn.execute("SELECT count(DISTINCT key_id) FROM warden.timeline").fetchone() == (1,)
    assert cli.run("audit", "verify").returncode == 0  # the chain alone holds: re-signed
    seen = cli.run("audit", "verify", "--anchors", str(anchors_dir), "--json", ok=False)
    assert seen.returncode == 1
    [problem] = json.loads(seen.stdout)["anchors"]["problems"]
    assert (problem["run_id"], problem["line"]) == (run_id, 1)
    assert "differs from its anchor" in problem["problem"]
    text = cli.run("audit", "verify", "--anchors", str(anchors_dir), ok=False).stdout
    assert f"TAMPERED: run {run_id} (default) at seq {problem['seq']}" in text
    assert rotated >= 2


def test_an_export_verifies_with_no_database_and_a_changed_byte_fails(
        cli: Cli, tmp_path: Path) -> None:
    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate", "--as", "alice").stdout.strip()
    out = tmp_path / "run.jsonl"
    cli.run("audit", "export", "--run", run_id, "--output", str(out))
    bad = cli.run("audit", "export", "--run", run_id, "--tenant", "default", ok=False)
    assert bad.returncode == 2 and "--run" in bad.stderr
    since = cli.run("audit", "export", "--tenant", "default", "--since", "2999-01-01", ok=False)
    assert since.returncode == 0 and '"type":"run"' not in since.stdout
    offline = {**cli.env, "WARDEN_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    checked = subprocess.run([sys.executable, "-m", "engine.cli", "audit", "verify-export",
                              str(out), "--json"], env=offline, capture_output=True, text=True,
                             timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["runs"] == 1
    text = out.read_text()
    at = text.index('"actor":"alice"') + len('"actor":"al')
    out.write_text(text[:at] + "e" + text[at + 1:])
    tampered = cli.run("audit", "verify-export", str(out), ok=False)
    assert tampered.returncode == 1 and "the export was changed" in tampered.stdout
    no_secret = {k: v for k, v in offline.items() if k != "WARDEN_SECRET_KEY"}
    no_secret["WARDEN_DATA_DIR"] = str(tmp_path / "elsewhere")
    refused = subprocess.run([sys.executable, "-m", "engine.cli", "audit", "verify-export",
                              str(out)], env=no_secret, capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 2 and "WARDEN_SECRET_KEY" in refused.stderr


def test_the_cli_records_who_ran_it_and_as_only_for_roles_that_may_act_for_others(
        cli: Cli, db_url: str) -> None:
    import getpass

    import psycopg
    from psycopg import sql

    cli.run("workflows", "apply", str(REPO / "tests/e2e/gate.yaml"))
    run_id = cli.run("runs", "start", "gate").stdout.strip()
    me = getpass.getuser()
    assert cli.json("runs", "show", run_id)["created_by"] == f"{me}@postgres"
    # never on a read command
    read = cli.run("runs", "list", "--as", "alice", ok=False)
    assert read.returncode == 2 and "--as" in read.stderr
    # a database role that does not own the schema records itself, and may not use --as
    # (an engine-like role: row-level security shows it the tenants in its scope)
    role = f"warden_test_cli_{os.getpid()}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        ident = sql.Identifier(role)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE warden_engine").format(ident))
        for grant in ("GRANT USAGE ON SCHEMA warden TO {}",
                      "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA warden TO {}",
                      "GRANT USAGE ON ALL SEQUENCES IN SCHEMA warden TO {}",
                      "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA warden TO {}",
                      "GRANT SELECT ON public.warden_alembic_version TO {}"):
            conn.execute(sql.SQL(grant).format(ident))
    try:
        cli.env["WARDEN_DATABASE_URL"] = db_url.replace("postgres@", f"{role}@", 1)
        refused = cli.run("runs", "start", "gate", "--as", "alice", ok=False)
        assert refused.returncode == 5 and "may not act for others" in refused.stderr
        mine = cli.run("runs", "start", "gate").stdout.strip()
        assert cli.json("runs", "show", mine)["created_by"] == f"{me}@{role}"
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_that_may_not_manage_worker_grants_is_told_so(
        cli: Cli, db_url: str, login_roles: LoginRoles) -> None:
    cli.env["WARDEN_DATABASE_URL"] = as_role(db_url, login_roles.engine)
    refused = cli.run("workers", "grant", login_roles.worker_a, "--tenant", "acme",
                      "--topic", "t.*", ok=False)
    assert refused.returncode == 5, refused.stderr
    assert "the database refused: permission denied" in refused.stderr
    assert "Traceback" not in refused.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM warden.worker_grants WHERE role_name = %s",
                            [login_roles.worker_a]).fetchone() == (0,)


def test_workers_grant_grants_and_revoke_round_trip(cli: Cli) -> None:
    cli.run("workers", "grant", "billing_worker", "--tenant", "acme", "--topic", "billing.*")
    [grant] = [g for g in cli.json("workers", "grants") if g["role"] == "billing_worker"]
    assert (grant["tenant_id"], grant["topic_glob"]) == ("acme", "billing.*")
    cli.run("workers", "revoke", "billing_worker", "--tenant", "acme", "--topic", "billing.*")
    assert [g for g in cli.json("workers", "grants") if g["role"] == "billing_worker"] == []
    bad = cli.run("workers", "grant", "billing_worker", "--tenant", "acme", "--topic",
                  "bill%", ok=False)
    assert bad.returncode == 2 and "--topic" in bad.stderr
