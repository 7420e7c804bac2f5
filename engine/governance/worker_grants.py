"""Which login roles may claim which tenants' jobs of which topics (docs/security.md).

A worker's claims, heartbeats and completions are checked against these rows inside the
SQL job protocol (warden.granted, against session_user): the grant is the database's
rule, not the worker's good manners. A role with no grant claims nothing.
"""

from __future__ import annotations

import re

from engine.core.errors import InvalidInput, NotFound
from engine.store import Database
from engine.store import worker_grants as q
from engine.store.records import WorkerGrantRow

ALL_TENANTS = "*"
_ROLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$.@-]{0,62}$")
_GLOB = re.compile(r"^[A-Za-z0-9._*?-]{1,255}$")
_TENANT = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")


def _check(role: str | None, tenant_id: str, topic_glob: str) -> None:
    if role is not None and not _ROLE.match(role):
        raise InvalidInput("ROLE", f"{role[:80]!r} is not a PostgreSQL role name")
    if not _TENANT.match(tenant_id):
        raise InvalidInput("--tenant", f"{tenant_id[:80]!r} is not a tenant id (or '*')")
    if not _GLOB.match(topic_glob):
        raise InvalidInput("--topic", f"{topic_glob[:80]!r}: a topic glob is letters, digits, "
                                      "'.', '_', '-', '*' and '?'")


async def grant(db: Database, *, role: str | None, tenant_id: str, topic_glob: str,
                granted_by: str) -> WorkerGrantRow:
    """Grants ``role`` (None: the connected login role itself) a tenant ('*': every one)
    and the topics a glob matches."""
    _check(role, tenant_id, topic_glob)
    async with db.connection() as conn:
        return await q.grant(conn, role=role, tenant_id=tenant_id, topic_glob=topic_glob,
                             granted_by=granted_by)


async def revoke(db: Database, *, role: str, tenant_id: str,
                 topic_glob: str) -> WorkerGrantRow:
    _check(role, tenant_id, topic_glob)
    async with db.connection() as conn:
        removed = await q.revoke(conn, role=role, tenant_id=tenant_id, topic_glob=topic_glob)
    if not removed:
        raise NotFound(f"no grant of tenant {tenant_id!r}, topics {topic_glob!r} to {role!r}")
    return removed[0]


async def grants(db: Database, role: str | None = None) -> list[WorkerGrantRow]:
    async with db.connection() as conn:
        return await q.list_all(conn, role)
