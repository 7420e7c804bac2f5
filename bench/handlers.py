"""Handlers the bench's `warden worker` processes load (``bench.handlers:noop``)."""

from __future__ import annotations

from engine.worker.runner import Job


async def noop(job: Job) -> None:
    """Does nothing, so a drain measures the engine alone."""
    return None
