from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engine.store import Database
from tests.e2e.processes import Processes


@pytest.fixture
def procs(db_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = Processes(db_url, logs)
    yield processes
    processes.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(processes.dump_logs())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url, max_size=10) as database:
        yield database


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    (path / "executions").touch()
    return path
