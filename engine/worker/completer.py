"""Group commit for a worker's completions: every job finished since the previous flush is
recorded by one `warden.complete_jobs` call, in one transaction.

With durability on, a commit costs an fsync, and one commit per job capped a worker at a
few hundred jobs/s whatever its handlers did. There is no timer: while one flush is in
flight the next batch gathers, so a lone completion is written at once (no added latency)
and a busy worker's completions group by themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from uuid import UUID

from engine.core.enums import Outcome
from engine.core.errors import DatabaseUnavailable, WardenError
from engine.store import Database
from engine.store import jobs as jobs_q
from engine.store.jobs import Completion

log = logging.getLogger(__name__)

# How long a batch is retried while the database is away before its jobs are given up on
# (their leases then expire and the reaper schedules the retries).
RETRY_DELAYS_S = (0.1, 0.5, 1, 2, 5, 5, 5)

_Waiter = tuple[Completion, "asyncio.Future[Outcome | None]"]


class Completer:
    def __init__(self, db: Database, *, max_batch: int = 500) -> None:
        self.db = db
        self.max_batch = max_batch
        self._waiting: list[_Waiter] = []
        self._wake = asyncio.Event()
        self._closed = False
        self.flushes = 0

    async def complete(self, job_id: str, lease_token: UUID, result_json: str
                       ) -> Outcome | None:
        """Records the job's result (JSON text, jobs.encode_result) under its lease; the
        outcome, or None if the database stayed away too long. Raises the WardenError of a
        result that cannot be stored."""
        if self._closed:
            raise RuntimeError("the completer is closed")
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((Completion(job_id, lease_token, result_json), future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        """Flushes until `close` is called and nothing waits; run it as a task."""
        try:
            while not (self._closed and not self._waiting):
                await self._wake.wait()
                self._wake.clear()
                while self._waiting:
                    batch = self._waiting[:self.max_batch]
                    del self._waiting[:self.max_batch]
                    await self._flush(batch)
        finally:
            for _, future in self._waiting:  # cancelled mid-way: nobody may wait forever
                if not future.done():
                    future.set_result(None)

    def close(self) -> None:
        """Stops `run` once everything already handed in is written."""
        self._closed = True
        self._wake.set()

    async def _flush(self, batch: Sequence[_Waiter]) -> None:
        try:
            outcomes = await self._write([c for c, _ in batch])
        except Exception as exc:
            # A WardenError is a result the database refuses (say, a string jsonb cannot
            # hold); any other error is one the store does not translate, a bug. Either
            # way it must not sink the others, nor end this loop (every later completion
            # would wait on it forever): write them one by one to find it, and hand each
            # its own error.
            if len(batch) == 1:
                _resolve(batch[0][1], exc)
                return
            log.log(logging.WARNING if isinstance(exc, WardenError) else logging.ERROR,
                    "a batch of %d completions was refused (%s); writing them singly",
                    len(batch), exc)
            for waiter in batch:
                await self._flush([waiter])
            return
        except BaseException:
            for _, future in batch:
                _resolve(future, None)
            raise
        self.flushes += 1
        for completion, future in batch:
            _resolve(future, outcomes.get(completion.job_id)
                     if outcomes is not None else None)

    async def _write(self, batch: list[Completion]) -> dict[str, Outcome] | None:
        for delay in RETRY_DELAYS_S:
            try:
                async with self.db.connection() as conn:
                    return await jobs_q.complete_many(conn, batch)
            except DatabaseUnavailable as exc:
                log.warning("completing %d jobs failed, database unavailable (%s); "
                            "retrying in %.1fs", len(batch), exc, delay)
                await asyncio.sleep(delay)
        log.error("could not record %d completions; their leases will expire and the "
                  "attempts will be retried", len(batch))
        return None


def _resolve(future: asyncio.Future[Outcome | None], value: Outcome | Exception | None) -> None:
    if future.done():
        return
    if isinstance(value, Exception):
        future.set_exception(value)
    else:
        future.set_result(value)
