"""The bench's databases, all named after its pid and all dropped at the end.

``warden_bench_<pid>_template`` is migrated once. A shape's runs are enqueued once into
``warden_bench_<pid>_seed`` (cloned from the template); every drain of that shape then
runs in ``warden_bench_<pid>``, a fresh clone of the seed. So the configurations of one
shape start from the same rows, and no measurement inherits the previous one's bloat,
dead tuples, pending autovacuum or pg_stat_* counters.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from bench import pg
from engine.governance import worker_grants
from engine.store import Database
from engine.store.migrate import upgrade

# The server every bench script measures on, unless WARDEN_BENCH_DATABASE_URL names another
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """The admin URL of the server the bench creates its databases on."""
    return os.environ.get("WARDEN_BENCH_DATABASE_URL") or DEFAULT_ADMIN_URL


@dataclass(frozen=True)
class BenchDatabases:
    admin_url: str
    name: str

    @classmethod
    def for_this_process(cls, url: str | None = None) -> BenchDatabases:
        """This process's databases, on the server ``url`` names (default: admin_url())."""
        return cls(url or admin_url(), f"warden_bench_{os.getpid()}")

    @property
    def template(self) -> str:
        return f"{self.name}_template"

    @property
    def seed(self) -> str:
        return f"{self.name}_seed"

    @property
    def url(self) -> str:
        return pg.with_database(self.admin_url, self.name)

    @property
    def seed_url(self) -> str:
        return pg.with_database(self.admin_url, self.seed)

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
        await self._admin("database_create_empty", database=self.template)
        template_url = pg.with_database(self.admin_url, self.template)
        await asyncio.to_thread(upgrade, template_url)
        # the bench's workers claim as the admin role: every tenant, every topic
        async with Database(template_url, max_size=1) as db:
            await worker_grants.grant(db, role=None, tenant_id=worker_grants.ALL_TENANTS,
                                      topic_glob="*", granted_by="bench")

    async def fresh_seed(self) -> str:
        """An empty migrated database to enqueue a shape's runs into; returns its URL."""
        await self._clone(self.seed, self.template)
        return self.seed_url

    async def fresh(self, *, from_seed: bool) -> str:
        """The measurement database, cloned from the seed (or the empty template)."""
        await self._clone(self.name, self.seed if from_seed else self.template)
        await self._admin("database_track_functions", database=self.name)
        return self.url

    async def drop_all(self) -> None:
        for database in (self.name, self.seed, self.template):
            await self._admin("database_drop", database=database)

    async def _clone(self, database: str, source: str) -> None:
        await self._admin("database_drop", database=database)
        await self._admin("database_create", database=database, template=source)
        # a no-op at head; it catches a migration added to the tree since prepare()
        await asyncio.to_thread(upgrade, pg.with_database(self.admin_url, database))

    async def _admin(self, statement: str, /, **identifiers: str) -> None:
        conn = await pg.connect(self.admin_url)
        try:
            await pg.ddl(conn, statement, **identifiers)
        finally:
            await conn.close()
