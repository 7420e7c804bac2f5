"""The bench's databases: one template migrated once, cloned fresh for every measurement.

A fresh clone per measurement keeps them independent: no bloat, dead tuples or pending
autovacuum from the previous one, and pg_stat_* counters that start at zero.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from bench import pg
from engine.migrate import upgrade


@dataclass(frozen=True)
class BenchDatabases:
    admin_url: str
    name: str

    @classmethod
    def for_this_process(cls, admin_url: str) -> BenchDatabases:
        return cls(admin_url, f"warden_bench_{os.getpid()}")

    @property
    def template(self) -> str:
        return f"{self.name}_template"

    @property
    def url(self) -> str:
        return pg.with_database(self.admin_url, self.name)

    def url_as(self, application_name: str) -> str:
        return pg.with_database(self.admin_url, self.name, application_name)

    async def server_facts(self) -> dict[str, Any]:
        conn = await pg.connect(self.admin_url)
        try:
            return await pg.one(conn, "server_facts")
        finally:
            await conn.close()

    async def prepare(self) -> None:
        """Creates and migrates the template (alembic is sync: off the event loop)."""
        await self._admin("database_create_empty", name=self.template)
        await asyncio.to_thread(upgrade, pg.with_database(self.admin_url, self.template))

    async def fresh(self) -> str:
        """Drops the previous measurement's database and clones a new one; returns its URL."""
        await self._admin("database_drop", name=self.name)
        await self._admin("database_create", name=self.name, template=self.template)
        await self._admin("database_track_functions", name=self.name)
        return self.url

    async def drop_all(self) -> None:
        await self._admin("database_drop", name=self.name)
        await self._admin("database_drop", name=self.template)

    async def _admin(self, statement: str, **identifiers: str) -> None:
        conn = await pg.connect(self.admin_url)
        try:
            await pg.ddl(conn, statement, **identifiers)
        finally:
            await conn.close()
