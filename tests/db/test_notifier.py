"""Webhook delivery (engine/daemons/notifier.py) against the real database and a receiver on
127.0.0.1: at-least-once, signed, retried with backoff from database time, given up."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from engine.core.enums import NotificationStatus, RunStatus
from engine.daemons import webhooks
from engine.daemons.notifier import Notifier, NotifierConfig
from engine.daemons.serve import EngineConfig, run_engine
from engine.governance import approvals
from engine.process import metrics
from engine.runs.services import Services
from engine.scheduling.scheduler import Scheduler
from engine.store import Database, sqlfiles
from engine.store import notifications as q
from engine.store.notifications import Backoff
from engine.store.records import NotificationRow
from tests import support
from tests.receiver import Receiver

pytestmark = pytest.mark.anyio

SECRET = b"0123456789abcdef-test-secret"

NotifierFactory = Callable[..., Notifier]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


@pytest.fixture
def make_notifier(db: Database) -> Iterator[NotifierFactory]:
    made: list[Notifier] = []

    def make(database: Database | None = None, **config: Any) -> Notifier:
        config.setdefault("secret", SECRET)
        notifier = Notifier(database or db, NotifierConfig(**config))
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


async def notify_steps(svc: Services, scheduler: Scheduler, url: str | None, count: int = 1,
                       message: str = "disk full on db-7") -> UUID:
    """A run of ``count`` independent notify steps posting to ``url``; returns the run id
    once the scheduler wrote their notifications."""
    webhook = f', webhook: "{url}"' if url else ""
    steps = "\n".join(f'  tell{i}: {{type: notify, message: "{message}"{webhook}}}'
                      for i in range(count))
    await support.store(svc.db, f"id: tell\nname: tell\nversion: 1.0.0\nsteps:\n{steps}\n")
    run = await support.start(svc, "tell")
    await support.settle(scheduler)
    return run.run_id


async def rows(db: Database, run_id: UUID) -> list[NotificationRow]:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM warden.notifications WHERE run_id = %s ORDER BY step_id", [run_id])
        return [NotificationRow(*r) for r in await cur.fetchall()]


async def one_row(db: Database, run_id: UUID) -> NotificationRow:
    [row] = await rows(db, run_id)
    return row


async def sql(db: Database, statement: str, *params: Any) -> Any:
    async with db.connection() as conn:
        cur = await conn.execute(statement, list(params))
        return await cur.fetchone() if cur.description else None


def attempts_counted(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "warden_webhook_attempts_total", {"outcome": outcome}) or 0.0


async def make_due(db: Database) -> None:
    """What the passing of time does to a pending retry or a lease."""
    await sql(db, "UPDATE warden.notifications SET next_attempt_at = now() - interval '1 s' "
                  "WHERE status IN ('pending', 'delivering')")


# ------------------------------------------------------------------ delivered once


async def test_a_200_delivers_once_with_idempotency_key_and_signature(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    before = await one_row(svc.db, run_id)
    assert (before.status, before.attempts) == (NotificationStatus.PENDING, 0)

    notifier = make_notifier()
    assert (await notifier.run_once()).delivered == 1
    assert (await notifier.run_once()).attempts == 0  # nothing left to do

    [request] = receiver.requests()
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts, note.last_status_code, note.last_error) == (
        NotificationStatus.DELIVERED, 1, 200, None)
    assert note.delivered_at is not None and note.next_attempt_at is None
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == str(note.notification_id)
    assert request.headers["User-Agent"].startswith("warden/")
    assert request.headers["X-Warden-Attempt"] == "1"
    expected = "sha256=" + hmac.new(SECRET, request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Warden-Signature"], expected)
    assert request.json() == {
        "notification_id": str(note.notification_id), "tenant_id": "default",
        "run_id": str(run_id), "step_id": "tell0", "workflow_id": "tell",
        "message": "disk full on db-7", "created_at": note.created_at.isoformat()}


async def test_without_a_secret_the_request_is_not_signed(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    await notify_steps(svc, scheduler, receiver.url)
    assert (await make_notifier(secret=None).run_once()).delivered == 1
    [request] = receiver.requests()
    assert "X-Warden-Signature" not in request.headers
    assert "Idempotency-Key" in request.headers


async def test_a_notification_without_webhook_is_delivered_by_the_outbox_alone(
        svc: Services, scheduler: Scheduler, make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, None)
    note = await one_row(svc.db, run_id)
    assert note.status is NotificationStatus.DELIVERED and note.delivered_at is not None
    assert (await make_notifier().run_once()).attempts == 0


# ------------------------------------------------------------------ failures and retries


async def test_a_500_is_retried_after_exponential_backoff_in_database_time(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    receiver.status, receiver.body = 500, b"upstream\x00 exploded"
    notifier = make_notifier(backoff=Backoff(base_s=60, max_s=3600, jitter=0.25))

    assert (await notifier.run_once()).retrying == 1
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts, note.last_status_code) == (
        NotificationStatus.PENDING, 1, 500)
    assert note.last_error == "HTTP 500: upstream exploded"
    # the delay runs from the database's clock: 60 s, plus up to 25 % jitter
    delay, future = await sql(
        svc.db, "SELECT extract(epoch FROM next_attempt_at - last_attempt_at), "
                "next_attempt_at > now() + interval '55 s' FROM warden.notifications")
    assert 60 <= delay <= 60 * 1.25 + 5 and future
    assert (await notifier.run_once()).attempts == 0  # not due yet: nothing is posted

    await make_due(svc.db)
    assert (await notifier.run_once()).retrying == 1
    delay, = await sql(svc.db, "SELECT extract(epoch FROM next_attempt_at - last_attempt_at) "
                               "FROM warden.notifications")
    assert 120 <= delay <= 120 * 1.25 + 5  # doubled

    await make_due(svc.db)
    receiver.status = 200
    assert (await notifier.run_once()).delivered == 1
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts, note.last_status_code, note.last_error) == (
        NotificationStatus.DELIVERED, 3, 200, None)
    requests = receiver.requests()
    assert [r.headers["X-Warden-Attempt"] for r in requests] == ["1", "2", "3"]
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1  # the same bytes, the same signature


async def test_retry_after_of_the_receiver_is_honoured(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    await notify_steps(svc, scheduler, receiver.url)
    receiver.status, receiver.headers = 503, {"Retry-After": "900"}
    await make_notifier(backoff=Backoff(base_s=1, max_s=3600)).run_once()
    delay, = await sql(svc.db, "SELECT extract(epoch FROM next_attempt_at - last_attempt_at) "
                               "FROM warden.notifications")
    assert 900 <= delay <= 905


@pytest.mark.parametrize(("status", "expected"), [
    (204, NotificationStatus.DELIVERED),
    (400, NotificationStatus.FAILED),
    (404, NotificationStatus.FAILED),
    (408, NotificationStatus.PENDING),
    (429, NotificationStatus.PENDING),
    (302, NotificationStatus.PENDING),  # redirects are not followed
    (503, NotificationStatus.PENDING),
])
async def test_what_each_answer_means(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory, status: int, expected: NotificationStatus) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    receiver.status, receiver.headers = status, {"Location": "http://127.0.0.1:1/elsewhere"}
    outcome = {NotificationStatus.DELIVERED: "delivered", NotificationStatus.FAILED: "failed",
               NotificationStatus.PENDING: "retry"}[expected]
    before = attempts_counted(outcome)
    await make_notifier().run_once()
    note = await one_row(svc.db, run_id)
    assert (note.status, note.last_status_code, len(receiver.requests())) == (
        expected, status, 1)
    assert attempts_counted(outcome) - before == 1  # /metrics: warden_webhook_attempts_total


async def test_a_4xx_fails_for_good_and_is_never_posted_again(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    receiver.status, receiver.body = 400, b'{"error": "unknown event"}'
    notifier = make_notifier()
    assert (await notifier.run_once()).failed == 1
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts, note.next_attempt_at) == (
        NotificationStatus.FAILED, 1, None)
    assert note.failed_at is not None and note.delivered_at is None
    assert note.last_error == 'HTTP 400: {"error": "unknown event"}'
    await make_due(svc.db)  # touches open rows only: this one is closed
    assert (await notifier.run_once()).attempts == 0
    assert len(receiver.requests()) == 1


async def test_a_timeout_is_retried(svc: Services, scheduler: Scheduler, receiver: Receiver,
                                    make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    receiver.hold = True  # answers nothing until the test ends
    assert (await make_notifier(timeout_s=0.3).run_once()).retrying == 1
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts, note.last_status_code) == (
        NotificationStatus.PENDING, 1, None)
    assert note.last_error == "timed out after 0.3s"
    assert len(receiver.requests()) == 1


async def test_a_refused_connection_is_retried(
        svc: Services, scheduler: Scheduler, make_notifier: NotifierFactory) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_id = await notify_steps(svc, scheduler, f"http://127.0.0.1:{port}/hook")
    assert (await make_notifier().run_once()).retrying == 1
    note = await one_row(svc.db, run_id)
    assert note.status is NotificationStatus.PENDING
    assert note.last_error is not None and note.last_error.startswith("cannot connect")


async def test_gives_up_after_the_last_attempt(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    receiver.status = 500
    notifier = make_notifier(max_attempts=2)
    assert (await notifier.run_once()).retrying == 1
    await make_due(svc.db)
    assert (await notifier.run_once()).failed == 1
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts, note.next_attempt_at) == (
        NotificationStatus.FAILED, 2, None)
    assert note.failed_at is not None
    assert len(receiver.requests()) == 2


# ------------------------------------------------------------------ many notifiers, crashes


async def test_two_notifiers_on_their_own_connections_deliver_each_row_once(
        svc: Services, scheduler: Scheduler, receiver: Receiver, db_url: str,
        make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url, count=30)
    receiver.latency_s = 0.05  # a batch is in flight while the other notifier claims
    async with Database(db_url, max_size=4) as other_db:
        first = make_notifier(batch_size=4)
        second = make_notifier(other_db, batch_size=4)

        async def drain(notifier: Notifier) -> int:
            made = 0
            while (done := await notifier.run_once()).attempts:
                made += done.attempts
            return made

        made = await asyncio.gather(drain(first), drain(second))
    keys = Counter(r.headers["Idempotency-Key"] for r in receiver.requests())
    assert len(keys) == 30 and set(keys.values()) == {1}
    assert sum(made) == 30 and min(made) > 0  # both took part
    assert {n.status for n in await rows(svc.db, run_id)} == {NotificationStatus.DELIVERED}


async def test_a_lease_that_expired_mid_post_is_posted_again(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    """A notifier claimed the row, posted, and died before recording: the receiver got the
    webhook once, Warden does not know it. After the lease, it is posted again."""
    run_id = await notify_steps(svc, scheduler, receiver.url)
    async with svc.db.connection() as conn:
        [claimed] = await q.claim(conn, limit=10, lease=timedelta(seconds=60), max_attempts=10)
    notifier = make_notifier()
    body = webhooks.body(claimed)
    assert webhooks.post(receiver.url, body, webhooks.headers(claimed, body, SECRET),
                timeout_s=5).status_code == 200  # ... and the process dies here

    assert (await notifier.run_once()).attempts == 0  # the lease holds
    await make_due(svc.db)  # the lease ends
    assert (await notifier.run_once()).delivered == 1
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts) == (NotificationStatus.DELIVERED, 2)
    first, second = receiver.requests()
    assert first.body == second.body  # the receiver dedupes on Idempotency-Key
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]

    async with svc.db.connection() as conn:  # the dead notifier's outcome, were it to come
        assert await q.record_failure(conn, claimed, give_up=False, status_code=500,
                                      error="late", backoff=Backoff()) is None
    assert (await one_row(svc.db, run_id)).status is NotificationStatus.DELIVERED


async def test_a_lease_that_expired_on_the_last_attempt_is_given_up(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    run_id = await notify_steps(svc, scheduler, receiver.url)
    async with svc.db.connection() as conn:
        await q.claim(conn, limit=10, lease=timedelta(seconds=60), max_attempts=1)
    await make_due(svc.db)
    assert (await make_notifier(max_attempts=1).run_once()).attempts == 0
    note = await one_row(svc.db, run_id)
    assert (note.status, note.attempts) == (NotificationStatus.FAILED, 1)
    assert note.last_error is not None and "outcome is unknown" in note.last_error
    assert receiver.requests() == []


# ------------------------------------------------------------------ end to end, schema


async def test_the_seed_workflow_with_a_webhook_ends_with_one_delivery(
        svc: Services, scheduler: Scheduler, receiver: Receiver,
        make_notifier: NotifierFactory) -> None:
    source = support.SEED_WORKFLOW.replace(
        "notify: {type: notify, depends_on: [apply_patch]}",
        f'notify: {{type: notify, depends_on: [apply_patch], message: "Incident remediated", '
        f'webhook: "{receiver.url}"}}')
    assert receiver.url in source
    await support.store(svc.db, source)
    run = await support.start(svc, "incident-remediation", {"incident_id": "INC-7781"})
    notifier = make_notifier()
    for _ in range(3):
        await support.settle(scheduler)
        [job] = await support.claim(svc.db, support.SEED_TOPICS)
        await support.complete(svc.db, job)
        assert (await notifier.run_once()).attempts == 0
    await support.settle(scheduler)
    [approval] = (await support.detail(svc, run.run_id)).approvals
    await approvals.decide(svc.db, tenant_id="default", approval_id=approval.approval_id,
                           approve=True, principal="bob", reason="ok")
    await support.settle(scheduler)
    [job] = await support.claim(svc.db, support.SEED_TOPICS)
    await support.complete(svc.db, job)
    await support.settle(scheduler)
    assert (await support.detail(svc, run.run_id)).run.status is RunStatus.SUCCEEDED

    assert (await notifier.run_once()).delivered == 1
    assert (await notifier.run_once()).attempts == 0
    [request] = receiver.requests()
    assert request.json()["workflow_id"] == "incident-remediation"
    assert request.json()["step_id"] == "notify"
    assert request.json()["message"] == "Incident remediated"
    assert (await one_row(svc.db, run.run_id)).status is NotificationStatus.DELIVERED
    assert (await support.kinds(svc.db, run.run_id))[-2:] == ["notify.sent", "run.succeeded"]


async def test_serve_posts_a_new_notification_at_once_not_at_the_next_poll(
        svc: Services, receiver: Receiver) -> None:
    stop = asyncio.Event()
    config = EngineConfig(poll_interval_s=0.05, notify_interval_s=60,
                          notifier=NotifierConfig(secret=SECRET))
    engine = asyncio.create_task(run_engine(svc, config, stop))
    try:
        for i in range(2):  # the second one surely after the notifier's LISTEN is up
            await support.store(svc.db, f"""
id: tell{i}
name: tell
version: 1.0.0
steps:
  tell: {{type: notify, webhook: "{receiver.url}"}}
""")
            await support.start(svc, f"tell{i}")

            async def posted(count: int = i + 1) -> bool:
                return len(receiver.requests()) == count

            await support.wait_for(posted, timeout=10, what=f"webhook {i + 1} posted")
    finally:
        stop.set()
        await asyncio.wait_for(engine, 10)
    assert len(receiver.requests()) == 2


@pytest.mark.parametrize("query", ["notifications_claim", "notifications_give_up_exhausted"])
async def test_the_claim_reads_the_due_index(svc: Services, query: str) -> None:
    async with svc.db.transaction() as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")  # an empty table: force the issue
        cur = await conn.execute("EXPLAIN " + sqlfiles.get(query).sql, {
            "limit": 16, "lease": timedelta(seconds=40), "max_attempts": 10})
        plan = "\n".join(r[0] for r in await cur.fetchall())
    assert "notifications_due" in plan


@pytest.mark.parametrize("webhook", ["file:///etc/passwd", "ftp://example.com/x", "hook"])
async def test_the_database_stores_only_http_webhooks(svc: Services, webhook: str) -> None:
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation, match="notifications_webhook_is_http"):
        await sql(svc.db, "INSERT INTO warden.notifications (tenant_id, run_id, step_id, "
                          "webhook, status, next_attempt_at) VALUES "
                          "('default', gen_random_uuid(), 's', %s, 'pending', now())", webhook)
