"""Policy evaluation speed: ``python bench/policy_eval.py [--rounds N] [--calls N]``.

Prints one JSON document: µs per ``Bundle.evaluate`` for a 100-rule bundle when the
first rule matches, the last one does, or none does (the default decides), plus a
worst case where every rule gets past its static checks and fails only on its last
input comparison. ``*_us`` figures are steady state: the bundle caches, per step, which
rules its static facts (tenant, workflow, step, topic, risk tags, capability) leave in
play; ``*_cold_us`` give every call a step never seen, so each pays that pass over the
rules. Then the time to parse + hash the bundle's YAML and to rebuild it from its stored
document (``Bundle.from_doc``, what a snapshot cache miss costs). Each figure is the
median of several rounds timed with ``time.perf_counter_ns``.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a plain script

from engine.governance.policy import Bundle, Facts, parse_bundle

RULES = 100
DECISIONS = ("allow", "deny", "require_approval", "allow_with_constraints")


def bundle_yaml(topic: Callable[[int], str]) -> str:
    """100 rules using every kind of match key; rule i matches ``topic(i)``."""
    lines = ["name: bench", "default_decision: deny", "rules:"]
    for i in range(RULES):
        decision = DECISIONS[i % len(DECISIONS)]
        lines += [
            f"  - name: rule-{i}",
            "    match:",
            f"      topics: [\"{topic(i)}\", \"job.extra{i}.?\"]",
            "      workflows: [\"pay*\", incident-remediation]",
            "      tenants: [default]",
            "      risk_tags: [prod, money]",
            "      capability: [deploy, payments]",
            "      labels: {env: prod}",
            "      input:",
            f"        - input.amount > {i}",
            "        - input.customer.tier in [\"gold\", \"platinum\"]",
            f"        - input.tags contains \"pci-{i}\"",
            f"    decision: {decision}",
            f"    reason: rule {i} decides",
        ]
        if decision in ("allow_with_constraints", "require_approval"):
            lines.append("    constraints: {timeout_ms: 60000, sandbox: strict}")
    return "\n".join(lines) + "\n"


def facts(topic: str, tag: str, step: str = "charge") -> Facts:
    return Facts(tenant_id="default", workflow_id="payments", step_id=step, topic=topic,
                 risk_tags=("money",), capability="payments", labels={"env": "prod"},
                 input={"amount": 5000, "customer": {"tier": "gold"}, "tags": ["x", tag]})


def _evaluate_next(bundle: Bundle, stream: Iterator[Facts]) -> object:
    return bundle.evaluate(next(stream))


def median_ns(run: Callable[[], object], calls: int, rounds: int) -> float:
    """Median over ``rounds`` of the mean ns per call across ``calls`` calls."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            run()
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    source = bundle_yaml(lambda i: f"job.svc{i}.*")
    bundle = parse_bundle(source)
    # Every rule's topic glob matches; each fails on its last check (the tag it wants).
    worst = parse_bundle(bundle_yaml(lambda i: "job.*"))
    cases = {
        "first_rule_matches": (bundle, facts("job.svc0.charge", "pci-0"), "rule-0"),
        "last_rule_matches": (bundle, facts("job.svc99.charge", "pci-99"), "rule-99"),
        "no_rule_matches": (bundle, facts("job.other.charge", "pci-0"), None),
        "no_rule_matches_all_topics_match": (worst, facts("job.svc0.charge", "none"), None),
    }
    result: dict[str, object] = {"rules": RULES, "rounds": args.rounds,
                                 "calls_per_round": args.calls}
    for name, (target, case, expected) in cases.items():
        assert target.evaluate(case).rule == expected, name  # the bench measures what it says
        result[f"{name}_us"] = round(median_ns(
            functools.partial(target.evaluate, case), args.calls, args.rounds) / 1000, 3)
        # Distinct step ids: every call misses the per-step cache (it holds 1024 steps).
        unseen = itertools.cycle([replace(case, step_id=f"step-{n}") for n in range(4096)])
        result[f"{name}_cold_us"] = round(median_ns(
            functools.partial(_evaluate_next, target, unseen), args.calls // 10,
            args.rounds) / 1000, 3)
    parse_calls = max(1, args.calls // 1000)
    result["parse_and_hash_ms"] = round(median_ns(
        lambda: parse_bundle(source).snapshot_hash, parse_calls, args.rounds) / 1e6, 3)
    doc = bundle.to_doc()
    result["from_doc_ms"] = round(median_ns(
        lambda: Bundle.from_doc(doc), parse_calls, args.rounds) / 1e6, 3)
    result["source_bytes"] = len(source.encode())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
