"""Warden: durable, governed workflow runs with all state in PostgreSQL.

The names a handler author needs are re-exported here: `Job` (what a handler receives)
and `NonRetryable` (raise it to fail an attempt without retry). They load on first use,
so commands that never run a worker do not pay for importing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.worker.runner import Job, NonRetryable

__all__ = ["Job", "NonRetryable"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine.worker import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
