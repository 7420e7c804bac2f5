"""One webhook request: what Warden sends for a notification, and how it reads the answer.

No database here: the notifier (engine/daemons/notifier.py) leases a row, calls `post` in a
thread and records the `Answer`. The request is the same bytes on every attempt, signed
when WARDEN_WEBHOOK_SECRET is set, and carries ``Idempotency-Key: <notification_id>`` so
a receiver can drop the duplicates that at-least-once delivery allows.

Answers: 2xx delivered; 408 and 429 retried; any other 4xx refused for good (retrying an
unchanged request cannot help); everything else — 5xx, redirects (never followed: a
webhook must not be steered elsewhere), timeouts, refused or broken connections, TLS
errors — retried.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from urllib.parse import urlsplit

from engine.core.canonical import canonical_json
from engine.store.records import NotificationRow

SIGNATURE_HEADER = "X-Warden-Signature"
ATTEMPT_HEADER = "X-Warden-Attempt"
_ERROR_SNIPPET = 200  # bytes of a refusal's body kept in last_error


def _version() -> str:
    try:
        return metadata.version("pgwarden")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


USER_AGENT = f"warden/{_version()}"


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    status_code: int | None
    """The HTTP status, or None when no answer came."""
    error: str | None = None
    """What went wrong, as stored in ``last_error``."""
    retry_after_s: float | None = None
    """The receiver's Retry-After, in seconds, when it gave one."""


def body(note: NotificationRow) -> bytes:
    """The stored payload plus the notification's identity and message (canonical JSON)."""
    doc = dict(note.payload) if isinstance(note.payload, dict) else {"payload": note.payload}
    doc.update(notification_id=str(note.notification_id), tenant_id=note.tenant_id,
               run_id=str(note.run_id), step_id=note.step_id, message=note.message,
               created_at=note.created_at.isoformat())
    return canonical_json(doc).encode("utf-8")


def sign(secret: bytes, payload: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of the exact body bytes, hex."""
    return "sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()


def headers(note: NotificationRow, payload: bytes, secret: bytes | None) -> dict[str, str]:
    found = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
             "Idempotency-Key": str(note.notification_id), ATTEMPT_HEADER: str(note.attempts)}
    if secret is not None:
        found[SIGNATURE_HEADER] = sign(secret, payload)
    return found


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if 400 <= status < 500 and status not in (408, 429):
        return Outcome.PERMANENT
    return Outcome.RETRY


def is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


# Only what a webhook needs: no file:, ftp: or data: handlers, and no redirect handler, so
# a 3xx surfaces as an HTTPError instead of being followed. Proxies come from the usual
# environment variables (http_proxy, https_proxy, no_proxy), as for any server process.
_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                 urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(),
                 urllib.request.HTTPErrorProcessor()):
    _OPENER.add_handler(_handler)


def post(url: str, payload: bytes, request_headers: dict[str, str], *,
         timeout_s: float) -> Answer:
    """POSTs once (blocking; the caller runs it in a thread) and never raises for a
    failed delivery: every failure is an Answer saying whether to retry."""
    if not is_http_url(url):  # definitions and a CHECK allow no other; never open file: etc.
        return Answer(Outcome.PERMANENT, None, f"not an http(s) URL: {url[:100]!r}")
    if "@" in urlsplit(url).netloc:  # urllib would look the whole user@host up in DNS
        return Answer(Outcome.PERMANENT, None, "credentials in a webhook URL (user@host) are "
                                               "not sent; verify X-Warden-Signature instead")
    request = urllib.request.Request(url, data=payload, headers=request_headers,
                                     method="POST")
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return Answer(Outcome.DELIVERED, response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return _refusal(exc)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return Answer(Outcome.RETRY, None, f"timed out after {timeout_s:g}s")
        return Answer(Outcome.RETRY, None, f"cannot connect: {reason}")
    except TimeoutError:
        return Answer(Outcome.RETRY, None, f"timed out after {timeout_s:g}s")
    except (OSError, http.client.HTTPException) as exc:
        return Answer(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}")
    except ValueError as exc:  # http.client.InvalidURL and kin: the URL will not change
        return Answer(Outcome.PERMANENT, None, f"invalid webhook URL: {exc}")


def _refusal(exc: urllib.error.HTTPError) -> Answer:
    code = exc.code
    try:
        snippet = exc.read(_ERROR_SNIPPET)
    except (OSError, http.client.HTTPException):
        snippet = b""
    text = " ".join(snippet.decode("utf-8", "replace").replace("\x00", "").split())
    if 300 <= code < 400:
        text = f"redirect to {exc.headers.get('Location', '?')!r} not followed"
    error = f"HTTP {code}" + (f": {text}" if text else "")
    return Answer(classify(code), code, error, _retry_after(exc.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    """Retry-After in delta-seconds; an HTTP date would need the client's clock, which
    Warden never compares with, so it is ignored (the backoff applies)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())
