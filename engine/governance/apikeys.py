"""API keys: creation (the secret is shown once), authentication, revocation.

A key reads ``wdn_<key_id>_<secret>``. Only HMAC-SHA256(server secret, secret) is stored,
so a copy of the database alone cannot be used to call the API; comparison is constant
time. The server secret comes from WARDEN_SECRET_KEY, or for a single-host install from
a file Warden creates (mode 0600) in its data folder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from engine.core.errors import ConfigError, InvalidInput, NotFound
from engine.core.settings import Settings
from engine.store import Database
from engine.store import api_keys as q
from engine.store.records import ApiKeyRow

PREFIX = "wdn_"
_HEX = re.compile(r"[0-9a-f]{16}")
MIN_SECRET_KEY = 32


class Role(StrEnum):
    SUBMITTER = "submitter"
    """Stores workflows and starts runs; reads runs."""
    APPROVER = "approver"
    """Decides approvals; reads runs."""
    OPERATOR = "operator"
    """Reruns and cancels runs; reads everything of its tenants."""
    ADMIN = "admin"
    """Manages keys and policy; may do everything."""
    WORKER = "worker"
    """Reads jobs (workers claim through SQL)."""
    AUDITOR = "auditor"
    """Reads a run's evidence with its proof (GET /workflow-runs/{id}/evidence)."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str  # the principal recorded as actor
    roles: frozenset[Role]
    tenants: frozenset[str]


def server_secret(settings: Settings) -> bytes:
    configured = os.environ.get("WARDEN_SECRET_KEY")
    if configured:
        if len(configured) < MIN_SECRET_KEY:
            raise ConfigError(f"WARDEN_SECRET_KEY must be at least {MIN_SECRET_KEY} characters")
        return configured.encode()
    path = settings.data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return Path(path).read_text().strip().encode()


def _hmac(secret_key: bytes, secret: str) -> str:
    return hmac.new(secret_key, secret.encode(), hashlib.sha256).hexdigest()


async def create(db: Database, secret_key: bytes, *, name: str | None, roles: list[Role],
                 tenants: list[str], created_by: str) -> tuple[ApiKeyRow, str]:
    """Returns the stored row and the plaintext key, which is never available again."""
    if not roles:
        raise InvalidInput("role", "at least one role is required")
    if not tenants:
        raise InvalidInput("tenant", "at least one tenant is required")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    async with db.connection() as conn:  # a duplicate name: Conflict (api_keys_name_unique)
        row = await q.insert(conn, key_id=key_id, name=name or f"key-{key_id}",
                             roles=[r.value for r in roles], tenants=sorted(set(tenants)),
                             secret_hmac=_hmac(secret_key, secret), created_by=created_by)
    return row, f"{PREFIX}{key_id}_{secret}"


async def authenticate(db: Database, secret_key: bytes, presented: str) -> Principal | None:
    """The key's principal, or None for a malformed, unknown or revoked key."""
    if not presented.startswith(PREFIX):
        return None
    key_id, _, secret = presented[len(PREFIX):].partition("_")
    if len(key_id) != 16 or not secret or not _HEX.fullmatch(key_id):
        return None
    async with db.connection() as conn:
        row = await q.get(conn, key_id)
        # compare even for an unknown key, so timing does not tell which ids exist
        expected = row.secret_hmac if row else "0" * 64
        if not hmac.compare_digest(expected, _hmac(secret_key, secret)) or row is None:
            return None
        if row.revoked_at is not None:
            return None
        await q.touch(conn, key_id)
    return Principal(row.key_id, row.name, frozenset(Role(r) for r in row.roles),
                     frozenset(row.tenants))


async def revoke(db: Database, key_id: str) -> ApiKeyRow:
    async with db.connection() as conn:
        row = await q.revoke(conn, key_id)
    if row is None:
        raise NotFound(f"no active key {key_id}")
    return row


async def list_keys(db: Database) -> list[ApiKeyRow]:
    async with db.connection() as conn:
        return await q.all_keys(conn)
