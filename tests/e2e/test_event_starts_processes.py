"""Event-started runs with real processes (docs/workflows.md#event-started-runs): two
`warden serve` processes, events sent by `warden events send` (twice) and by a SQL client
calling warden.send_event, one run per event and subscribing workflow; a bad `on_event`
refused by `warden workflows apply` naming the field; an event posted over HTTP to a
running serve."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.store import Database
from tests import support
from tests.e2e.processes import REPO, Processes, free_port

pytestmark = pytest.mark.anyio


def _subscriber(workflow_id: str) -> str:
    return f"""
id: {workflow_id}
name: {workflow_id}
version: 1.0.0
on_event:
  - name: incident.opened
    input: {{incident: "${{event.data.id}}", via: "${{event.key}}"}}
steps:
  work: {{type: job, topic: t.e2e.{workflow_id}}}
"""


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WARDEN_DATABASE_URL": db_url, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def _runs(db: Database) -> list[tuple[str, str]]:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT workflow_id, idempotency_key FROM warden.runs "
                                 "ORDER BY workflow_id, idempotency_key")
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def test_events_from_the_cli_and_sql_start_one_run_each_with_two_serves(
        db: Database, db_url: str, procs: Processes, tmp_path: Path) -> None:
    await support.store(db, _subscriber("triage"))
    await support.store(db, _subscriber("page"))
    procs.serve()
    procs.serve()
    for _ in range(2):  # the same event twice: the second is a duplicate
        sent = _cli(db_url, "events", "send", "--id", "cli-1", "--name", "incident.opened",
                    "--key", "cli", "--data", '{"id": "INC-1"}')
        assert sent.returncode == 0, (sent.stdout, sent.stderr)
    async with db.connection() as conn:  # a SQL client: the NOTIFY wakes the serves
        for _ in range(2):
            await conn.execute("SELECT * FROM warden.send_event('default', 'sql-1', "
                               "'incident.opened', 'sql', '{\"id\": \"INC-2\"}')")

    async def all_started() -> bool:
        return len(await _runs(db)) >= 4

    await support.wait_for(all_started, timeout=30, what="four event-started runs")
    await asyncio.sleep(1.0)  # both serves poll every 200 ms: give them chances to repeat
    assert await _runs(db) == [("page", "event:cli-1"), ("page", "event:sql-1"),
                               ("triage", "event:cli-1"), ("triage", "event:sql-1")]
    async with db.connection() as conn:
        cur = await conn.execute("SELECT run_id, input FROM warden.runs "
                                 "WHERE workflow_id = 'triage' AND idempotency_key = 'event:sql-1'")
        row = await cur.fetchone()
    assert row is not None and row[1] == {"incident": "INC-2", "via": "sql"}
    shown = _cli(db_url, "runs", "show", str(row[0]))
    assert shown.returncode == 0, shown.stderr
    assert "started by event sql-1 (incident.opened, key sql)" in shown.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(_subscriber("bad").replace("${event.data.id}", "${input.id}"))
    refused = _cli(db_url, "workflows", "apply", str(bad))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "on_event[0].input.incident" in refused.stderr
    assert "unknown template root 'input'" in refused.stderr


async def test_an_event_posted_over_http_to_a_running_serve_starts_one_run(
        db: Database, db_url: str, procs: Processes, tmp_path: Path) -> None:
    await support.store(db, _subscriber("triage"))
    secret = "k" * 40
    env = {"WARDEN_SECRET_KEY": secret, "WARDEN_DATA_DIR": str(tmp_path)}
    created = subprocess.run(
        [sys.executable, "-m", "engine.cli", "keys", "create", "--role", "submitter",
         "--name", "sender"], env={**os.environ, "WARDEN_DATABASE_URL": db_url,
                                   "PYTHONPATH": str(REPO), **env},
        capture_output=True, text=True, timeout=60, check=False)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    port = free_port()
    procs.warden("serve", WARDEN_HTTP_ADDR=f"127.0.0.1:{port}", **env)
    base = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                return (await client.get(f"{base}/readyz")).is_success
        except httpx.HTTPError:
            return False

    await support.wait_for(ready, timeout=30, what="the API")
    body = {"id": "http-1", "name": "incident.opened", "key": "web", "data": {"id": "INC-3"}}
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key},
                                 timeout=10) as client:
        first = await client.post("/api/v1/events", json=body)
        again = await client.post("/api/v1/events", json=body)
        assert (first.status_code, again.status_code) == (201, 200), (first.text, again.text)

        async def started() -> bool:
            return len(await _runs(db)) >= 1

        await support.wait_for(started, timeout=30, what="the event-started run")
        await asyncio.sleep(0.5)  # the serve polls every 200 ms: a second start would show
        assert await _runs(db) == [("triage", "event:http-1")]
        async with db.connection() as conn:
            cur = await conn.execute("SELECT run_id FROM warden.runs")
            row = await cur.fetchone()
        assert row is not None
        doc = (await client.get(f"/api/v1/workflow-runs/{row[0]}")).json()
    assert doc["started_by_event"]["event_id"] == "http-1"
    assert doc["input"] == {"incident": "INC-3", "via": "web"}
