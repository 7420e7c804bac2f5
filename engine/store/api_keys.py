"""Typed wrappers for sql/queries/api_keys.sql."""

from __future__ import annotations

from engine.store.connection import Conn, execute, fetch_all, fetch_one
from engine.store.records import ApiKeyRow


async def insert(conn: Conn, *, key_id: str, name: str, roles: list[str], tenants: list[str],
                 secret_hmac: str, created_by: str) -> ApiKeyRow:
    row = await fetch_one(conn, "api_key_insert", {
        "key_id": key_id, "name": name, "roles": roles, "tenants": tenants,
        "secret_hmac": secret_hmac, "created_by": created_by}, ApiKeyRow)
    assert row is not None  # INSERT … RETURNING always returns the row or raises
    return row


async def get(conn: Conn, key_id: str) -> ApiKeyRow | None:
    return await fetch_one(conn, "api_key_get", {"key_id": key_id}, ApiKeyRow)


async def all_keys(conn: Conn) -> list[ApiKeyRow]:
    return await fetch_all(conn, "api_keys_list", {}, ApiKeyRow)


async def revoke(conn: Conn, key_id: str) -> ApiKeyRow | None:
    return await fetch_one(conn, "api_key_revoke", {"key_id": key_id}, ApiKeyRow)


async def touch(conn: Conn, key_id: str) -> None:
    await execute(conn, "api_key_touch", {"key_id": key_id})
