"""One frozen `Settings`, read from WARDEN_* environment variables and validated at start.

A bad value stops the program with a message naming the variable (ConfigError).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import ConfigError

MIN_WEBHOOK_SECRET = 16
MAX_EVENT_KEEP_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    """WARDEN_DATABASE_URL; None means: use the embedded server in data_dir."""
    data_dir: Path
    """WARDEN_DATA_DIR: where the embedded server keeps its data (default ~/.local/share/warden)."""
    poll_interval_s: float
    """WARDEN_POLL_INTERVAL_MS: how often loops poll when no NOTIFY arrives (default 1000)."""
    lease_s: float
    """WARDEN_LEASE_MS: how long a worker's claim lasts between heartbeats (default 30000)."""
    approval_expires_ms: int
    """WARDEN_APPROVAL_EXPIRES_MS: default expiry of approvals (default 7 days)."""
    log_format: str
    """WARDEN_LOG_FORMAT: text or json."""
    log_level: str
    """WARDEN_LOG_LEVEL: a logging level name (default INFO)."""
    event_loop: str
    """WARDEN_EVENT_LOOP: auto (uvloop where it is installed), uvloop or asyncio."""
    http_addr: tuple[str, int]
    """WARDEN_HTTP_ADDR: host:port the API listens on (default 127.0.0.1:8081)."""
    dispatch_timeout_ms: int
    """WARDEN_DISPATCH_TIMEOUT_MS: a claimable job unclaimed this long is reported
    (default 5 minutes)."""
    policy_default: str
    """WARDEN_POLICY_DEFAULT: the decision for a tenant with no active policy snapshot:
    deny (default: nothing runs ungoverned), allow, or require_approval."""
    webhook_secret: bytes | None
    """WARDEN_WEBHOOK_SECRET: signs webhook bodies (X-Warden-Signature: sha256=HMAC);
    unset sends them unsigned. At least 16 characters, no surrounding whitespace."""
    webhook_max_attempts: int
    """WARDEN_WEBHOOK_MAX_ATTEMPTS: attempts per webhook before giving up (default 10)."""
    webhook_timeout_ms: int
    """WARDEN_WEBHOOK_TIMEOUT_MS: one webhook request, connect to answer (default 10000)."""
    traces: str | None
    """Whether to emit OpenTelemetry traces (docs/deployment.md#traces): the name of the
    variable that turned them on, or None (off, the default). WARDEN_OTEL=1 turns them
    on, WARDEN_OTEL=0 off; unset, they are on when OTEL_TRACES_EXPORTER (other than
    none), OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and
    OTEL_SDK_DISABLED=true keeps them off."""
    audit_anchor_dir: Path | None
    """WARDEN_AUDIT_ANCHOR_DIR: where `warden serve` appends signed chain heads
    (anchors.jsonl, docs/dba.md "Anchors"); unset, serve writes no anchors."""
    audit_anchor_interval_s: float
    """WARDEN_AUDIT_ANCHOR_INTERVAL_S: seconds between two anchors in `warden serve`
    (default 300)."""
    partition_months_ahead: int = 3
    """WARDEN_PARTITION_MONTHS_AHEAD: months of timeline partitions kept ready beyond this
    one by `warden migrate` and, hourly, `warden serve` (default 3, at most 24;
    docs/dba.md "Partitions and retention")."""
    retention_archive_dir: Path | None = None
    """WARDEN_RETENTION_ARCHIVE_DIR: where `warden retention` writes the archives of the
    partitions it drops, unless --archive-dir says (docs/dba.md)."""
    event_keep_ms: int = 24 * 3600 * 1000
    """WARDEN_EVENT_KEEP_MS: how long an event is kept for a wait_event step that has not
    begun waiting yet (docs/workflows.md#events; default 1 day, at most 30 days)."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _event_keep_ms(env: Mapping[str, str]) -> int:
    value = _int(env, "WARDEN_EVENT_KEEP_MS", 24 * 3600 * 1000, minimum=0)
    if value > MAX_EVENT_KEEP_MS:  # warden.send_event keeps no event longer
        raise ConfigError(f"WARDEN_EVENT_KEEP_MS must be at most {MAX_EVENT_KEEP_MS} "
                          f"(30 days), got {value}")
    return value


def _webhook_secret(env: Mapping[str, str]) -> bytes | None:
    raw = env.get("WARDEN_WEBHOOK_SECRET")
    if raw is None:
        return None
    # set but empty is most likely an unset variable interpolated by a deployment script:
    # refuse it rather than silently sending unsigned webhooks
    if len(raw) < MIN_WEBHOOK_SECRET:
        raise ConfigError(f"WARDEN_WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET} "
                          f"characters (got {len(raw)}); unset it to send unsigned webhooks")
    if raw != raw.strip():
        raise ConfigError("WARDEN_WEBHOOK_SECRET has leading or trailing whitespace; "
                          "receivers would compute another signature")
    return raw.encode()


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _addr(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"WARDEN_HTTP_ADDR must be host:port, got {raw!r}")
    return host.strip("[]"), int(port)


def _traces(env: Mapping[str, str]) -> str | None:
    switch = env.get("WARDEN_OTEL", "")
    if switch not in ("", "0", "1"):
        raise ConfigError(f"WARDEN_OTEL must be 1 (traces on) or 0 (off), got {switch!r}")
    if switch:
        return "WARDEN_OTEL" if switch == "1" else None
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip() not in ("", "none"):
        return "OTEL_TRACES_EXPORTER"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if env.get(name):
            return name
    return None


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    url = env.get("WARDEN_DATABASE_URL") or None
    if url is not None and not url.startswith(("postgresql://", "postgres://", "host=", "dbname=")):
        raise ConfigError("WARDEN_DATABASE_URL must be a libpq URL (postgresql://…) "
                          f"or key=value string, got {url[:40]!r}")
    default_dir = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "warden"
    return Settings(
        database_url=url,
        data_dir=Path(env.get("WARDEN_DATA_DIR") or default_dir),
        poll_interval_s=_int(env, "WARDEN_POLL_INTERVAL_MS", 1000, minimum=10) / 1000,
        lease_s=_int(env, "WARDEN_LEASE_MS", 30_000, minimum=100) / 1000,
        approval_expires_ms=_int(env, "WARDEN_APPROVAL_EXPIRES_MS", 7 * 24 * 3600 * 1000,
                                 minimum=1),
        log_format=_choice(env, "WARDEN_LOG_FORMAT", "text", ("text", "json")),
        log_level=_choice(env, "WARDEN_LOG_LEVEL", "INFO",
                          ("DEBUG", "INFO", "WARNING", "ERROR")),
        event_loop=_choice(env, "WARDEN_EVENT_LOOP", "auto", ("auto", "uvloop", "asyncio")),
        dispatch_timeout_ms=_int(env, "WARDEN_DISPATCH_TIMEOUT_MS", 300_000, minimum=1000),
        http_addr=_addr(env.get("WARDEN_HTTP_ADDR") or "127.0.0.1:8081"),
        policy_default=_choice(env, "WARDEN_POLICY_DEFAULT", "deny",
                               ("deny", "allow", "require_approval")),
        webhook_secret=_webhook_secret(env),
        webhook_max_attempts=_int(env, "WARDEN_WEBHOOK_MAX_ATTEMPTS", 10, minimum=1),
        webhook_timeout_ms=_int(env, "WARDEN_WEBHOOK_TIMEOUT_MS", 10_000, minimum=100),
        traces=_traces(env),
        audit_anchor_dir=Path(env["WARDEN_AUDIT_ANCHOR_DIR"])
        if env.get("WARDEN_AUDIT_ANCHOR_DIR") else None,
        audit_anchor_interval_s=float(_int(env, "WARDEN_AUDIT_ANCHOR_INTERVAL_S", 300,
                                           minimum=1)),
        partition_months_ahead=_months_ahead(env),
        retention_archive_dir=Path(env["WARDEN_RETENTION_ARCHIVE_DIR"])
        if env.get("WARDEN_RETENTION_ARCHIVE_DIR") else None,
        event_keep_ms=_event_keep_ms(env),
    )


def _months_ahead(env: Mapping[str, str]) -> int:
    value = _int(env, "WARDEN_PARTITION_MONTHS_AHEAD", 3, minimum=0)
    if value > 24:
        raise ConfigError(f"WARDEN_PARTITION_MONTHS_AHEAD must be at most 24, got {value}")
    return value
