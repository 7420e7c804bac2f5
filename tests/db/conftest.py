from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url, max_size=20) as database:
        yield database


@pytest.fixture
def svc(db: Database) -> Services:
    """Allow-by-default: tests of the engine's mechanics are not about policy."""
    return Services.create(db, policy_default=Verdict.ALLOW, approval_expires_ms=60_000)


@pytest.fixture
def scheduler(svc: Services) -> Scheduler:
    return Scheduler(svc)
