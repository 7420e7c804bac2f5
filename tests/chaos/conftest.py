"""Fixtures of the chaos suite: a restartable cluster of the test's own (never the shared
server), a migrated database on it, and processes that are all killed at the end."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.store import Database
from tests import support
from tests.chaos.cluster import Cluster
from tests.chaos.harness import SECRET_KEY, kill_all
from tests.e2e.processes import Processes


@dataclass
class Chaos:
    cluster: Cluster
    url: str
    procs: Processes
    marks: Path


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Not under pytest's basetemp: every pytest session that starts (others may run at the
    # same time) makes /tmp/pytest-of-<user> private again, and the server's OS user would
    # lose its way to the data dir. A short path, too: the unix socket lives in it.
    started = Cluster(Path(tempfile.mkdtemp(prefix="warden-chaos-")) / "c").start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def chaos(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Chaos]:
    url = cluster.migrated_database("warden_chaos")
    logs = tmp_path / "logs"
    logs.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    procs = Processes(url, logs, {"WARDEN_SECRET_KEY": SECRET_KEY})
    try:
        yield Chaos(cluster, url, procs, marks)
    finally:
        kill_all(procs)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(procs.dump_logs(), file=sys.stderr)
            print(f"==== server log\n{cluster.log_tail()}", file=sys.stderr)


@pytest.fixture
async def engine_db(chaos: Chaos) -> AsyncIterator[Database]:
    async with Database(chaos.url, max_size=4) as database:
        yield database


# Every case runs under an active snapshot that allows everything, so completions dispatch
# the steps they make ready themselves (docs/design.md#dispatch-in-the-completion): the
# faults meet that path as well as the scheduler's (which still dispatches root steps).
ALLOW_ALL = "name: chaos\ndefault_decision: allow\nrules: []\n"


@pytest.fixture
async def svc(engine_db: Database) -> Services:
    await support.activate_policy(engine_db, ALLOW_ALL)
    return Services.create(engine_db, policy_default=Verdict.ALLOW)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
