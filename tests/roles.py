"""Login roles for the tests of least privilege: one per group role of docs/security.md,
named after this test session and dropped at its end (roles belong to the whole server)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class LoginRoles:
    engine: str
    worker_a: str
    worker_b: str
    auditor: str

    def all(self) -> list[str]:
        return [self.engine, self.worker_a, self.worker_b, self.auditor]


def as_role(url: str, role: str) -> str:
    """``url`` with another user (the servers the tests use trust local connections)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def create(admin_url: str) -> Iterator[LoginRoles]:
    prefix = f"wt_{secrets.token_hex(3)}"
    roles = LoginRoles(f"{prefix}_engine", f"{prefix}_worker_a", f"{prefix}_worker_b",
                       f"{prefix}_auditor")
    groups = {roles.engine: "warden_engine", roles.worker_a: "warden_worker",
              roles.worker_b: "warden_worker", roles.auditor: "warden_auditor"}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role, group in groups.items():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(role), sql.Identifier(group)))
    try:
        yield roles
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for role in roles.all():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
