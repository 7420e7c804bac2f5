"""A job's flow control gates, fixed at dispatch (docs/workflows.md#concurrency-and-rate-limits).

The step's ``concurrency`` and ``rate_limit`` keys are rendered against the run's input and
finished steps' outputs; an ``allow_with_constraints`` decision's ``max_concurrency`` and
``rate_limit`` then take their place (the policy governs: a rule that says "one at a time"
is obeyed whatever the step says). A policy limit without a key gates everything the rule
matches in the tenant, under the key ``policy:<rule>``. warden.claim_jobs enforces them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.definitions.flow import render_key
from engine.definitions.model import StepDef
from engine.governance.policy import Decision


@dataclass(frozen=True)
class Gates:
    concurrency_key: str = ""
    concurrency_limit: int | None = None
    rate_key: str = ""
    rate_limit: int | None = None
    rate_per_ms: int | None = None


def step_gates(definition: StepDef, *, run_input: Any, step_outputs: Mapping[str, Any]) -> Gates:
    """The step's own gates; InvalidInput (field ``key``) when a key cannot render."""
    gates = Gates()
    if definition.concurrency is not None:
        gates = Gates(render_key(definition.concurrency.key, run_input=run_input,
                                 step_outputs=step_outputs), definition.concurrency.limit)
    if definition.rate_limit is not None:
        rate = definition.rate_limit
        gates = Gates(gates.concurrency_key, gates.concurrency_limit,
                      render_key(rate.key, run_input=run_input, step_outputs=step_outputs),
                      rate.limit, rate.per_ms)
    return gates


def with_policy(gates: Gates, decision: Decision) -> Gates:
    """The gates once the decision's limits (validated with the policy) replace the step's."""
    constraints = decision.constraints
    default_key = f"policy:{decision.rule or 'default'}"
    concurrency = constraints.get("max_concurrency")
    if concurrency is not None:
        if isinstance(concurrency, Mapping):
            key, limit = str(concurrency.get("key") or default_key), int(concurrency["limit"])
        else:
            key, limit = default_key, int(concurrency)
        gates = Gates(key, limit, gates.rate_key, gates.rate_limit, gates.rate_per_ms)
    rate = constraints.get("rate_limit")
    if isinstance(rate, Mapping):
        gates = Gates(gates.concurrency_key, gates.concurrency_limit,
                      str(rate.get("key") or default_key), int(rate["limit"]),
                      int(rate["per_ms"]))
    return gates
