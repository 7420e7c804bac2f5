"""Typed wrappers for sql/queries/workflows.sql."""

from __future__ import annotations

from typing import Any

from engine.store.connection import Conn, fetch_all, fetch_one, jsonb
from engine.store.records import WorkflowRow


async def insert(conn: Conn, *, tenant_id: str, workflow_id: str, version: str,
                 semver: tuple[int, int, int, str | None], name: str,
                 definition: dict[str, Any], digest: str, source: str,
                 created_by: str) -> WorkflowRow | None:
    major, minor, patch, pre = semver
    return await fetch_one(conn, "workflow_insert", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "version": version,
        "major": major, "minor": minor, "patch": patch, "pre": pre, "name": name,
        "definition": jsonb(definition), "digest": digest, "source": source,
        "created_by": created_by}, WorkflowRow)


async def get(conn: Conn, tenant_id: str, workflow_id: str, version: str) -> WorkflowRow | None:
    return await fetch_one(conn, "workflow_get", {
        "tenant_id": tenant_id, "workflow_id": workflow_id, "version": version}, WorkflowRow)


async def latest(conn: Conn, tenant_id: str, workflow_id: str) -> WorkflowRow | None:
    return await fetch_one(conn, "workflow_latest", {
        "tenant_id": tenant_id, "workflow_id": workflow_id}, WorkflowRow)


async def versions(conn: Conn, tenant_id: str, workflow_id: str) -> list[WorkflowRow]:
    return await fetch_all(conn, "workflow_versions", {
        "tenant_id": tenant_id, "workflow_id": workflow_id}, WorkflowRow)


async def list_latest(conn: Conn, tenant_id: str) -> list[WorkflowRow]:
    return await fetch_all(conn, "workflow_list_latest", {"tenant_id": tenant_id}, WorkflowRow)
