"""Warden: durable, governed workflow runs with all state in PostgreSQL.

The names a handler author needs are re-exported here: `Job` (what a handler receives)
and `NonRetryable` (raise it to fail an attempt without retry).
"""

from engine.worker import Job, NonRetryable

__all__ = ["Job", "NonRetryable"]
