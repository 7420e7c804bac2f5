from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.scheduler import Scheduler
from engine.store import Database
from engine.workflows import DefinitionCache


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    async with Database(db_url, max_size=20) as database:
        yield database


@pytest.fixture
def scheduler(db: Database) -> Scheduler:
    return Scheduler(db, DefinitionCache(), approval_expires_ms=60_000)
