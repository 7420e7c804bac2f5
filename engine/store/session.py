"""Typed wrapper for sql/queries/session.sql: who the session is in the database."""

from __future__ import annotations

from dataclasses import dataclass

from engine.store.connection import Database, fetch_one


@dataclass(frozen=True)
class Identity:
    db_role: str
    may_act_for_others: bool


async def identity(db: Database) -> Identity:
    async with db.connection() as conn:
        found = await fetch_one(conn, "session_identity", {}, Identity)
    assert found is not None  # the schema exists: require_head checked it
    return found
