"""Sample workers for the incident-remediation demo: one handler for all four topics.

Usable from the CLI too: ``warden worker --topic job.incident.detect … --handler
engine.examples.handlers:handle``. They show the handler contract, not real remediation.
"""

from __future__ import annotations

from typing import Any

from engine.worker.runner import Job, NonRetryable

# The error rate detect reports when the run's input names none: the demo's first incident.
DEFAULT_ERROR_RATE = 0.07

TOPICS = ("job.incident.detect", "job.incident.classify", "job.incident.patch.plan",
          "job.incident.host.check", "job.incident.patch.apply")


async def handle(job: Job) -> Any:
    incident = job.input.get("incident_id", "INC-unknown")
    if job.topic == "job.incident.detect":
        rate = float(job.input.get("error_rate", DEFAULT_ERROR_RATE))
        return {"incident_id": incident, "error_rate": rate,
                "signal": f"error-rate {rate:.0%} on checkout"}
    if job.topic == "job.incident.classify":
        # deterministic, so the workflow's branch on it is too: tests and the demo pick
        # the path through the run input's error_rate
        detected = job.upstream["detect"]
        return {"severity": classify(detected["error_rate"]), "service": "checkout",
                "evidence": detected["signal"],
                "affected_hosts": ["checkout-1", "checkout-2", "checkout-3"]}
    if job.topic == "job.incident.host.check":  # one job per affected host (for_each)
        return {"host": job.input["host"], "serving_release": "2026.11.25-1",
                "error_rate": 0.07}
    if job.topic == "job.incident.patch.plan":
        return {"action": "rollback", "service": job.upstream["classify"]["service"],
                "to_release": "2026.11.24-3"}
    if job.topic == "job.incident.patch.apply":
        # A checkpoint before the side effect: a retry after a crash sees it and can ask
        # the deploy system whether the rollback (keyed by side_effect_key) already ran.
        if job.checkpoint is None:
            await job.save_checkpoint({"phase": "rollback-requested",
                                       "idempotency_key": job.side_effect_key})
        plan = job.input["plan"]
        return {"rolled_back": plan["service"], "to_release": plan["to_release"],
                "idempotency_key": job.side_effect_key}
    raise NonRetryable(f"the demo has no handler for topic {job.topic!r}")


def classify(error_rate: float) -> str:
    """The incident's severity: ``low`` skips the approval gate of the demo workflow."""
    if error_rate >= 0.25:
        return "critical"
    if error_rate >= 0.05:
        return "high"
    return "low"
