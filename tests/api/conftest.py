from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.app import create_app
from engine.governance import apikeys
from engine.governance.apikeys import Role
from engine.governance.policy import Verdict
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database

SECRET = b"test-secret-key-of-at-least-32-bytes!!"

# name -> (roles, tenants)
KEYS: dict[str, tuple[list[Role], list[str]]] = {
    "alice": ([Role.SUBMITTER], ["default"]),
    "bob": ([Role.APPROVER], ["default"]),
    "olga": ([Role.OPERATOR], ["default"]),
    "root": ([Role.ADMIN], ["default", "acme"]),
    "wendy": ([Role.WORKER], ["default"]),
    "audrey": ([Role.AUDITOR], ["default"]),
    "mallory": ([Role.SUBMITTER, Role.APPROVER, Role.OPERATOR], ["acme"]),
}


@dataclass
class Harness:
    client: httpx.AsyncClient
    svc: Services
    scheduler: Scheduler
    keys: dict[str, str]
    app: Any = None  # the Starlette app, for a test that sets its state

    def as_(self, name: str, tenant: str = "default") -> dict[str, str]:
        return {"X-API-Key": self.keys[name], "X-Tenant-ID": tenant}


@asynccontextmanager
async def harness(svc: Services) -> AsyncIterator[Harness]:
    """The API over ``svc``, with an API key per entry of KEYS."""
    keys = {}
    for name, (roles, tenants) in KEYS.items():
        _row, keys[name] = await apikeys.create(svc.db, SECRET, name=name, roles=roles,
                                                tenants=tenants, created_by="test")
    app = create_app(svc=svc, secret_key=SECRET, max_body_size=64 * 1024)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Harness(client, svc, Scheduler(svc), keys, app)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Harness]:
    async with Database(db_url, max_size=20) as db, harness(Services.create(
            db, policy_default=Verdict.ALLOW, approval_expires_ms=60_000)) as api:
        yield api
