"""The webhook request and the settings that shape it (no network, no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest

from engine.core import settings
from engine.core.enums import NotificationStatus
from engine.core.errors import ConfigError
from engine.daemons import webhooks
from engine.daemons.webhooks import Outcome
from engine.store.records import NotificationRow

NOTE = NotificationRow(
    tenant_id="acme", notification_id=UUID("00000000-0000-4000-8000-000000000001"),
    run_id=UUID("00000000-0000-4000-8000-000000000002"), step_id="tell", message="héllo",
    webhook="https://hooks.example/x", payload={"run_id": "ignored", "workflow_id": "wf"},
    created_at=datetime(2026, 12, 1, 12, 0, tzinfo=UTC), delivered_at=None,
    status=NotificationStatus.DELIVERING, attempts=3, next_attempt_at=None,
    last_attempt_at=None, last_status_code=None, last_error=None, failed_at=None)


def test_the_body_is_the_payload_plus_the_notification_in_canonical_json() -> None:
    assert webhooks.body(NOTE) == (
        '{"created_at":"2026-12-01T12:00:00+00:00","message":"héllo",'
        '"notification_id":"00000000-0000-4000-8000-000000000001",'
        '"run_id":"00000000-0000-4000-8000-000000000002","step_id":"tell",'
        '"tenant_id":"acme","workflow_id":"wf"}').encode()


def test_the_signature_is_hmac_sha256_of_the_body_in_hex() -> None:
    # the reference value, from: printf '{}' | openssl dgst -sha256 -hmac key
    assert webhooks.sign(b"key", b"{}") == (
        "sha256=a777724d943eb48dc69bca8a4a6d57a04db3f9ec7e1de4e581e860265bdf3032")


def test_headers_name_the_notification_and_sign_only_with_a_secret() -> None:
    body = webhooks.body(NOTE)
    signed = webhooks.headers(NOTE, body, b"s" * 16)
    assert signed["Idempotency-Key"] == str(NOTE.notification_id)
    assert signed["X-Warden-Attempt"] == "3"
    assert signed["Content-Type"] == "application/json"
    assert signed["User-Agent"].startswith("warden/")
    assert signed["X-Warden-Signature"] == webhooks.sign(b"s" * 16, body)
    assert "X-Warden-Signature" not in webhooks.headers(NOTE, body, None)


@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.DELIVERED), (202, Outcome.DELIVERED), (299, Outcome.DELIVERED),
    (301, Outcome.RETRY), (400, Outcome.PERMANENT), (401, Outcome.PERMANENT),
    (408, Outcome.RETRY), (410, Outcome.PERMANENT), (429, Outcome.RETRY),
    (499, Outcome.PERMANENT), (500, Outcome.RETRY), (503, Outcome.RETRY),
])
def test_what_an_http_status_means(status: int, outcome: Outcome) -> None:
    assert webhooks.classify(status) is outcome


@pytest.mark.parametrize(("url", "error"), [
    ("file:///etc/passwd", "not an http(s) URL"),
    ("ftp://example.com/x", "not an http(s) URL"),
    ("https://user:pw@127.0.0.1:9/x", "credentials in a webhook URL"),
])
def test_nothing_but_plain_http_urls_is_ever_opened(url: str, error: str) -> None:
    answer = webhooks.post(url, b"{}", {}, timeout_s=1)
    assert answer.outcome is Outcome.PERMANENT and answer.status_code is None
    assert answer.error is not None and answer.error.startswith(error)


def test_webhook_settings_default() -> None:
    loaded = settings.load({})
    assert (loaded.webhook_secret, loaded.webhook_max_attempts,
            loaded.webhook_timeout_ms) == (None, 10, 10_000)
    loaded = settings.load({"WARDEN_WEBHOOK_SECRET": "x" * 16,
                            "WARDEN_WEBHOOK_MAX_ATTEMPTS": "3",
                            "WARDEN_WEBHOOK_TIMEOUT_MS": "2500"})
    assert (loaded.webhook_secret, loaded.webhook_max_attempts,
            loaded.webhook_timeout_ms) == (b"x" * 16, 3, 2500)


@pytest.mark.parametrize(("env", "message"), [
    ({"WARDEN_WEBHOOK_SECRET": ""}, "WARDEN_WEBHOOK_SECRET must be at least 16 characters"),
    ({"WARDEN_WEBHOOK_SECRET": "short"}, "WARDEN_WEBHOOK_SECRET must be at least 16"),
    ({"WARDEN_WEBHOOK_SECRET": " " + "x" * 20}, "WARDEN_WEBHOOK_SECRET has leading or"),
    ({"WARDEN_WEBHOOK_MAX_ATTEMPTS": "0"}, "WARDEN_WEBHOOK_MAX_ATTEMPTS must be at least 1"),
    ({"WARDEN_WEBHOOK_MAX_ATTEMPTS": "ten"}, "WARDEN_WEBHOOK_MAX_ATTEMPTS must be a whole"),
    ({"WARDEN_WEBHOOK_TIMEOUT_MS": "5"}, "WARDEN_WEBHOOK_TIMEOUT_MS must be at least 100"),
])
def test_a_bad_webhook_setting_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings.load(env)
