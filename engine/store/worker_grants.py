"""Typed wrappers for sql/queries/worker_grants.sql."""

from __future__ import annotations

from engine.store.connection import Conn, fetch_all, fetch_one
from engine.store.records import WorkerGrantRow


async def grant(conn: Conn, *, role: str | None, tenant_id: str, topic_glob: str,
                granted_by: str) -> WorkerGrantRow:
    row = await fetch_one(conn, "worker_grant_insert", {
        "role": role, "tenant_id": tenant_id, "topic_glob": topic_glob,
        "granted_by": granted_by}, WorkerGrantRow)
    assert row is not None  # INSERT … ON CONFLICT DO UPDATE … RETURNING always returns it
    return row


async def revoke(conn: Conn, *, role: str, tenant_id: str,
                 topic_glob: str) -> list[WorkerGrantRow]:
    return await fetch_all(conn, "worker_grant_delete", {
        "role": role, "tenant_id": tenant_id, "topic_glob": topic_glob}, WorkerGrantRow)


async def list_all(conn: Conn, role: str | None = None) -> list[WorkerGrantRow]:
    return await fetch_all(conn, "worker_grants_list", {"role": role}, WorkerGrantRow)
