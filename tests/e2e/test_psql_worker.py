"""The plain-psql worker of docs/examples works against a real run."""

from __future__ import annotations

import os
import subprocess

import pytest

from engine.core.enums import RunStatus
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from tests import support
from tests.e2e.processes import REPO

pytestmark = pytest.mark.anyio


async def test_the_documented_psql_worker_completes_jobs(db: Database, db_url: str) -> None:
    await support.store(db, """
id: sqlish
name: done by psql
version: 1.0.0
steps:
  a: {type: job, topic: t.psql}
  b: {type: job, topic: t.psql}
""")
    scheduler = Scheduler(support.services(db))
    run = await support.start(db, "sqlish", {"ticket": "T-1"})
    await support.settle(scheduler)
    done = subprocess.run([str(REPO / "docs/examples/psql_worker.sh"), "t.psql"],
                          env={**os.environ, "WARDEN_DATABASE_URL": db_url, "ONCE": "1"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("completed ") == 2
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert detail.steps[0].output == {"handled_by": "psql", "input": {"ticket": "T-1"}}
