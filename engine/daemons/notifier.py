"""The notifier: delivers notify steps' webhooks, at least once.

Each pass leases due rows of ``warden.notifications`` in one short transaction (SKIP
LOCKED; the lease is ``next_attempt_at`` in the future, and the claim counts the
attempt), commits, POSTs each row outside any transaction (`engine.daemons.webhooks`), then
records each outcome in its own short statement, fenced by the attempt number: a notifier
whose lease ran out and whose row was taken over records nothing. A notifier that dies
mid-POST leaves its rows ``delivering`` until the lease ends; any notifier then posts
them again — hence at-least-once, and the ``Idempotency-Key`` receivers dedupe on.

Any number of `warden serve` processes may run this; each attempt happens once per lease.
Outcomes live on the row (``attempts``, ``last_status_code``, ``last_error``,
``delivered_at``, ``failed_at``); the timeline already has ``notify.sent`` and gets no
delivery events (its kinds are fixed: docs/design.md#the-timeline).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from engine.core.enums import NotificationStatus
from engine.daemons import webhooks
from engine.daemons.webhooks import Answer, Outcome
from engine.process import metrics
from engine.store import Database
from engine.store import notifications as q
from engine.store.notifications import Backoff
from engine.store.records import NotificationRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotifierConfig:
    secret: bytes | None = None
    """WARDEN_WEBHOOK_SECRET: signs each body (X-Warden-Signature); None sends unsigned."""
    max_attempts: int = 10
    """WARDEN_WEBHOOK_MAX_ATTEMPTS: attempts before a delivery is given up."""
    timeout_s: float = 10.0
    """WARDEN_WEBHOOK_TIMEOUT_MS: the whole of one request, connect to answer."""
    backoff: Backoff = field(default_factory=Backoff)
    batch_size: int = 16
    """Rows leased per pass, all posted at once (one thread each)."""
    lease_margin_s: float = 30.0
    """Beyond the timeout: time to record the outcome before the row may be taken over."""

    @property
    def lease(self) -> timedelta:
        # every POST of a batch runs at once, so one timeout (plus recording) covers them
        return timedelta(seconds=self.timeout_s + self.lease_margin_s)


@dataclass(frozen=True)
class Deliveries:
    """What one pass did (attempts made, and how they ended)."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    fenced: int = 0

    @property
    def attempts(self) -> int:
        return self.delivered + self.retrying + self.failed + self.fenced


class Notifier:
    def __init__(self, db: Database, config: NotifierConfig | None = None) -> None:
        self.db = db
        self.config = config or NotifierConfig()
        # Its own threads: a receiver that trickles its answer holds one past our deadline
        # (urllib's timeout is per socket read) without starving other to_thread users.
        self._pool = ThreadPoolExecutor(max_workers=self.config.batch_size,
                                        thread_name_prefix="warden-webhook")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run_once(self) -> Deliveries:
        """One pass: give up exhausted rows, lease due ones, post them, record outcomes."""
        config = self.config
        async with self.db.connection() as conn:
            for note in await q.give_up_exhausted(conn, limit=config.batch_size,
                                                  max_attempts=config.max_attempts):
                _log_given_up(note)
            claimed = await q.claim(conn, limit=config.batch_size, lease=config.lease,
                                    max_attempts=config.max_attempts)
        if not claimed:
            return Deliveries()
        outcomes = await asyncio.gather(*(self._deliver(note) for note in claimed),
                                        return_exceptions=True)
        for outcome in outcomes:  # all recorded that could be; the rest waits for its lease
            if isinstance(outcome, BaseException):
                raise outcome
        recorded = [o for o in outcomes if not isinstance(o, BaseException)]
        done = Deliveries(
            delivered=sum(r is NotificationStatus.DELIVERED for r in recorded),
            retrying=sum(r is NotificationStatus.PENDING for r in recorded),
            failed=sum(r is NotificationStatus.FAILED for r in recorded),
            fenced=sum(r is None for r in recorded))
        metrics.webhook_attempts({"delivered": done.delivered, "retry": done.retrying,
                                  "failed": done.failed, "lease_lost": done.fenced})
        return done

    async def _deliver(self, note: NotificationRow) -> NotificationStatus | None:
        """Posts one leased row and records the outcome: its new status, or None if the
        lease was lost meanwhile."""
        assert note.webhook is not None  # a CHECK keeps rows without one out of the claim
        payload = webhooks.body(note)
        headers = webhooks.headers(note, payload, self.config.secret)
        answer = await self._post(note.webhook, payload, headers)
        give_up = (answer.outcome is Outcome.PERMANENT
                   or (answer.outcome is Outcome.RETRY
                       and note.attempts >= self.config.max_attempts))
        async with self.db.connection() as conn:
            if answer.outcome is Outcome.DELIVERED:
                assert answer.status_code is not None
                row = await q.record_delivered(conn, note, answer.status_code)
            else:
                row = await q.record_failure(
                    conn, note, give_up=give_up, status_code=answer.status_code,
                    error=answer.error or "failed", backoff=self.config.backoff,
                    retry_after_s=answer.retry_after_s)
        _log_attempt(note, answer, row)
        return None if row is None else row.status

    async def _post(self, url: str, payload: bytes, headers: dict[str, str]) -> Answer:
        timeout = self.config.timeout_s
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pool, lambda: webhooks.post(
            url, payload, headers, timeout_s=timeout))
        try:
            # urllib's timeout bounds each socket operation, not the request: a receiver
            # that trickles bytes could otherwise hold the row past its lease
            return await asyncio.wait_for(work, timeout)
        except TimeoutError:
            return Answer(Outcome.RETRY, None, f"timed out after {timeout:g}s")


def _ids(note: NotificationRow) -> dict[str, object]:
    return {"notification_id": str(note.notification_id), "tenant_id": note.tenant_id,
            "run_id": str(note.run_id), "step_id": note.step_id, "attempt": note.attempts}


def _log_attempt(note: NotificationRow, answer: Answer, row: NotificationRow | None) -> None:
    extra = _ids(note) | {"status_code": answer.status_code, "outcome": answer.outcome.value}
    got = f"HTTP {answer.status_code}" if answer.status_code else answer.error
    where = (note.tenant_id, note.run_id, note.step_id, note.notification_id, note.attempts)
    if row is None:
        log.warning("webhook tenant=%s run=%s step=%s notification=%s attempt %d: %s, but "
                    "its lease was lost meanwhile; the outcome is not recorded", *where, got,
                    extra=extra)
    elif row.status is NotificationStatus.DELIVERED:
        log.info("webhook tenant=%s run=%s step=%s notification=%s attempt %d: delivered "
                 "(%s)", *where, got, extra=extra)
    elif row.status is NotificationStatus.PENDING:
        log.info("webhook tenant=%s run=%s step=%s notification=%s attempt %d: %s; retry at "
                 "%s", *where, answer.error, row.next_attempt_at.isoformat()
                 if row.next_attempt_at else "?", extra=extra)
    else:
        log.warning("webhook tenant=%s run=%s step=%s notification=%s attempt %d: %s; given "
                    "up", *where, answer.error, extra=extra)


def _log_given_up(note: NotificationRow) -> None:
    log.warning("webhook tenant=%s run=%s step=%s notification=%s: given up after %d "
                "attempts (%s)", note.tenant_id, note.run_id, note.step_id,
                note.notification_id, note.attempts, note.last_error, extra=_ids(note))
