"""Connections, transactions and the one place where database errors become WardenErrors.

Everything in the engine reaches PostgreSQL through a `Database` (an
`AsyncConnectionPool` with Warden's session settings) and the query helpers below, which
run the named queries of `sql/queries` and map rows onto frozen dataclasses.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import fields
from enum import StrEnum
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row, dict_row
from psycopg.types.enum import EnumInfo, register_enum
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

from engine.core import errors
from engine.core.enums import (
    ApprovalStatus,
    JobStatus,
    NotificationStatus,
    Outcome,
    RunStatus,
    StepStatus,
    StepType,
)
from engine.store import scope
from engine.store.sqlfiles import get

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
Params = Mapping[str, Any]

# psycopg_pool retries a failed connection with exponential backoff bounded only by
# reconnect_timeout (minutes): after a few seconds of outage the pool can stay empty for
# many more while the server is already back (the chaos suite measured it). One attempt
# a second is cheap for a database client, and recovery is then prompt. The pool offers
# no per-pool setting for this; the class constant is the knob.
AttemptWithBackoff.DELAY_BACKOFF = 1.0

# Engine sessions never hold a lock for long: a statement that runs away or a transaction
# left open by a bug is cut off by the server instead of blocking workers (issue 5).
# Custom plans always: warden's tables swing from empty to millions of rows, and a generic
# plan cached while a table was small outlives its growth when nothing analyzes it (the
# bench's claim query, prepared on an empty warden.jobs, went on reading the tenant's
# every job for each claimed one). Planning our short statements costs ~0.1 ms.
SESSION_OPTIONS = ("-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000 "
                   "-c plan_cache_mode=force_custom_plan")

# How old a session's cached plans may grow before the pool drops them (DISCARD PLANS,
# on the connection's next checkout). The hot path runs on generic plans (its functions,
# and the transactions that ask for them), each made once per session; a plan made while a
# table was nearly empty (a new database, a bench) reads every index as equally cheap and
# a sequential scan as cheapest, and PostgreSQL makes it again only after an ANALYZE. A
# start of one run went from 8 to 33 ms over 8,000 starts that way (bench/README.md). Made
# again on tables that have grown, the plans are right, and making them costs a few
# milliseconds per session per period (docs/design.md#plans-that-age).
PLAN_REFRESH_S = 10.0

# How long a connection back in the pool counts as alive without asking the server. Any
# older one is checked with a round trip at checkout, so a connection the server dropped
# while it sat idle (a restart, an idle timeout) is replaced, not handed out. A connection
# that ran a statement moments ago needs no such question: the check cost a round trip
# on every claim, completion and heartbeat, two process wake-ups each when the host is
# idle, about 0.35 ms of every enqueue -> claim (bench/README.md, session 14). One that
# broke within the window fails its next statement once with the usual "database
# unavailable" error, which every caller already retries, and the pool discards it.
# HikariCP skips its check the same way (aliveBypassWindowMs, also 500 ms).
ALIVE_WINDOW_S = 0.5


class _LastInFirstOutPool(AsyncConnectionPool[Conn]):
    """Hands out the connection returned last, not the one idle longest.

    psycopg_pool queues its idle connections first in, first out: under a light load every
    pooled connection takes its turn, so each one's session pays its first use (compiling
    the PL/pgSQL it calls, loading the catalog entries of every table it touches, planning
    every statement: 25-40 ms for a start, against 3-5 ms after) and each goes cold again
    while the others work. Last in, first out, a light load keeps to the few sessions it
    needs, which stay warm in the server's caches and in the alive window above; the rest
    stay idle until a burst needs them, and the pool closes them after `max_idle` as
    before (its shrink takes the connection idle longest, still the queue's head).
    PgBouncer reuses server connections the same way by default (server_round_robin off)
    for the same reason. docs/design.md#the-connection-used-last-goes-first.

    psycopg_pool has no setting for the order. The one override turns the queue so its
    newest connection is at the head before the pool takes the head, and leaves every
    other use of the queue (growth, shrink, close) as the library wrote it; the pool calls
    it under its lock. tests/db/test_pool_checks.py pins the order, so a release that
    changes these internals fails there and not in production.
    """

    async def _get_ready_connection(self, timeout: float | None) -> Conn | None:
        if len(self._pool) > 1:
            self._pool.rotate(1)
        return await super()._get_ready_connection(timeout)


# SQLSTATEs raised on purpose by the functions in migrations/ (class WD).
_WARDEN_CODES: dict[str, Callable[[str], errors.WardenError]] = {
    "WD001": errors.LeaseLost,
    "WD002": errors.JobCancelled,
    "WD003": lambda message: errors.LeaseLost(message, Outcome.NOT_FOUND),
    "WD404": errors.NotFound,
    "WD409": errors.Conflict,
    "WD010": errors.InvalidTransition,
    "WD422": lambda message: errors.InvalidInput("value", message),
}
_CONSTRAINT_ERRORS: dict[str, type[errors.WardenError]] = {
    "approvals_no_self_approval": errors.Forbidden,
    "approvals_no_rerun_chain_approval": errors.Forbidden,
    "api_keys_name_unique": errors.Conflict,
    "api_keys_name_check": errors.InvalidInput,
}


def translate(exc: BaseException) -> errors.WardenError | None:
    """The WardenError a database exception means, or None if it is a bug to surface."""
    # before OperationalError, its base class: a NOWAIT lock someone holds right now
    if isinstance(exc, pg_errors.LockNotAvailable):
        return errors.Busy(f"busy: {exc.diag.message_primary or exc}")
    if isinstance(exc, psycopg.OperationalError | pg_errors.AdminShutdown
                  | pg_errors.CannotConnectNow):
        return errors.DatabaseUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, psycopg.DataError) and exc.sqlstate in (None, "22P05", "22021"):
        # a value PostgreSQL cannot store: NUL in text or jsonb (refused client-side by the
        # driver, sqlstate None) or a character the encoding lacks — the caller's input
        return errors.InvalidInput("value", "contains a character PostgreSQL cannot store "
                                            "(such as U+0000)")
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        # the role this process logs in as may not do this (docs/security.md): say so
        # plainly rather than as a bug (row-level security's WITH CHECK lands here too)
        return errors.Forbidden(f"the database refused: {exc.diag.message_primary or exc}")
    if isinstance(exc, psycopg.Error) and exc.diag is not None:
        code = exc.sqlstate or ""
        message = exc.diag.message_primary or str(exc)
        if code in _WARDEN_CODES:
            return _WARDEN_CODES[code](message)
        constraint = exc.diag.constraint_name or ""
        if constraint in _CONSTRAINT_ERRORS:
            cls = _CONSTRAINT_ERRORS[constraint]
            if cls is errors.InvalidInput:
                return errors.InvalidInput(constraint.split("_")[-2], message)
            return cls(f"refused by {constraint}: {message}")
    return None


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc


_ENUMS: dict[str, type[StrEnum]] = {
    "warden.run_status": RunStatus,
    "warden.step_status": StepStatus,
    "warden.job_status": JobStatus,
    "warden.approval_status": ApprovalStatus,
    "warden.step_type": StepType,
    "warden.notification_status": NotificationStatus,
}


async def register_enums(conn: Conn) -> None:
    """Load warden enums as their StrEnum mirrors (an unmigrated database is left alone)."""
    for pg_name, py_enum in _ENUMS.items():
        info = await EnumInfo.fetch(conn, pg_name)
        if info is not None:
            register_enum(info, conn, py_enum, mapping={m: m.value for m in py_enum})


def jsonb(value: Any) -> Jsonb:
    return Jsonb(value)


def jsonb_text(text: str) -> Jsonb:
    """JSON its caller encoded already (json.dumps), sent as jsonb without a second
    encoding."""
    return Jsonb(text, dumps=_verbatim)


def _verbatim(text: Any) -> str:
    return str(text)


def json_rows(rows: Iterable[Any]) -> Jsonb:
    """Dataclass rows as one JSON array, for the set-based writes that read it back with
    jsonb_to_recordset (UUIDs and times as their text forms, which Postgres parses)."""
    return Jsonb([shallow_dict(row) for row in rows], dumps=_dumps_plain)


def shallow_dict(row: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values as they are: `dataclasses.asdict` deep-copies
    every nested input and output, which showed in the scheduler's profile (and so did
    `fields()`, rebuilt on each call: the names are kept per class)."""
    names = _FIELD_NAMES.get(type(row))
    if names is None:
        names = _FIELD_NAMES[type(row)] = tuple(f.name for f in fields(row))
    return {name: getattr(row, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _dumps_plain(value: Any) -> str:
    return json.dumps(value, default=str)


async def connect(url: str, *, autocommit: bool = True) -> Conn:
    """One connection outside the pool (LISTEN, CLI one-shots)."""
    async with translated():
        conn = await psycopg.AsyncConnection.connect(
            url, autocommit=autocommit, options=SESSION_OPTIONS, connect_timeout=5)
        await register_enums(conn)
        return conn


class Database:
    """A pool of connections to one Warden database."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 8,
                 acquire_timeout: float = 2.0, alive_window_s: float = ALIVE_WINDOW_S) -> None:
        self.url = url
        # How long a caller waits for a pooled connection. Short on purpose: while the
        # server is down no connection will come, and the API must answer 503 now (the
        # loops back off and retry) rather than hold each request for half a minute.
        self.acquire_timeout = acquire_timeout
        self.alive_window_s = alive_window_s
        # when each pooled connection last came back from its user (see _checkout)
        self._returned_at: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()
        self._pool: AsyncConnectionPool[Conn] = _LastInFirstOutPool(
            url, min_size=min_size, max_size=max_size, open=False,
            kwargs={"autocommit": True, "options": SESSION_OPTIONS, "connect_timeout": 5},
            # a broken connection (server restarted) is replaced, not handed out again
            check=self._check,
            configure=register_enums,
        )

    async def _check(self, conn: Conn) -> None:
        returned = self._returned_at.get(conn)
        if returned is not None and time.monotonic() - returned < self.alive_window_s:
            return
        await AsyncConnectionPool.check_connection(conn)

    async def open(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        async with translated():
            await self._pool.open(wait=wait, timeout=timeout)

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled autocommit connection: each statement is its own transaction."""
        async with translated(), self._checkout() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self, *, generic_plans: bool = False) -> AsyncIterator[Conn]:
        """A pooled connection inside one transaction, committed on normal exit.
        ``generic_plans``: its prepared statements skip the per-execution planning that
        SESSION_OPTIONS asks for; only for transactions whose statements are all keyed
        lookups and set-based writes over arrays (a scheduler pass, a start), whose plan
        does not depend on the values."""
        async with translated(), self._checkout() as conn, conn.transaction():
            if generic_plans:
                async with conn.cursor() as cur:
                    await cur.execute(get("transaction_generic_plans").sql)
            yield conn

    @asynccontextmanager
    async def _checkout(self) -> AsyncIterator[Conn]:
        async with self._pool.connection(timeout=self.acquire_timeout) as conn:
            try:
                await _refresh_plans(conn)
                await _apply_scope(conn)
                yield conn
            finally:
                # Stamped here rather than in the pool's reset callback: with a reset
                # callback psycopg_pool returns every connection through a task of its
                # own, so the connection just returned is not yet back when the next
                # checkout comes, and the pool hands out another (one that may be
                # cold). A connection that comes back broken is discarded by the pool
                # whatever its stamp; one left in a transaction is rolled back there.
                self._returned_at[conn] = time.monotonic()


@asynccontextmanager
async def savepoint(conn: Conn) -> AsyncIterator[Conn]:
    """A savepoint inside the caller's transaction: an exception rolls back what the block
    wrote and nothing before it (two round trips: SAVEPOINT and RELEASE)."""
    async with translated(), conn.transaction():
        yield conn


# The tenant scope each pooled connection's session carries now, so a connection that goes
# back to work of the same scope costs no extra round trip (engine/store/scope.py).
_SESSION_SCOPES: weakref.WeakKeyDictionary[Conn, str] = weakref.WeakKeyDictionary()


# When each pooled connection's session last dropped its cached plans (monotonic seconds).
_PLANS_MADE_SINCE: weakref.WeakKeyDictionary[Conn, float] = weakref.WeakKeyDictionary()


async def _refresh_plans(conn: Conn) -> None:
    now = time.monotonic()
    since = _PLANS_MADE_SINCE.setdefault(conn, now)
    if now - since >= PLAN_REFRESH_S:
        async with conn.cursor() as cur:
            await cur.execute(get("session_discard_plans").sql)
        _PLANS_MADE_SINCE[conn] = now


async def _apply_scope(conn: Conn) -> None:
    wanted = scope.current()
    if _SESSION_SCOPES.get(conn) != wanted:
        async with conn.cursor() as cur:
            await cur.execute(get("session_tenant_scope").sql, {"tenant": wanted})
        _SESSION_SCOPES[conn] = wanted


async def fetch_one(conn: Conn, name: str, params: Params, row: type[T]) -> T | None:
    async with translated(), conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(get(name).sql, params)
        return await cur.fetchone()


async def fetch_all(conn: Conn, name: str, params: Params, row: type[T]) -> list[T]:
    async with translated(), conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(get(name).sql, params)
        return await cur.fetchall()


async def fetch_value(conn: Conn, name: str, params: Params) -> Any:
    """The first column of the first row (for queries that return one scalar)."""
    async with translated(), conn.cursor() as cur:
        await cur.execute(get(name).sql, params)
        found = await cur.fetchone()
        return None if found is None else found[0]


async def fetch_dicts(conn: Conn, name: str, params: Params) -> list[dict[str, Any]]:
    async with translated(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(get(name).sql, params)
        return await cur.fetchall()


async def execute(conn: Conn, name: str, params: Params) -> int:
    """Runs a query for its effect; returns the affected row count."""
    async with translated(), conn.cursor() as cur:
        await cur.execute(get(name).sql, params)
        return cur.rowcount
