"""bench/run.py's comparison: every headline figure of Warden beside the peer's for the
same shape, with warden/peer. (The peer itself is not run here: pgqueuer is in the
`bench` extra, not the test one; running the bench is how it is exercised.)"""

from __future__ import annotations

from typing import Any

from bench.run import comparison, summary, table


def _report() -> dict[str, Any]:
    def drained(rate: float) -> dict[str, Any]:
        return {"jobs_per_s": rate}

    def latency(p50: float, p99: float) -> dict[str, Any]:
        return {"latency": {"p50_ms": p50, "p99_ms": p99}}

    return {
        "throughput": {
            "one_step": {
                "enqueue": {"runs_per_s": 400.0},
                "1_worker": drained(700.0), "2_workers": drained(600.0),
                "2_workers_2_serves": drained(650.0),
                "peer": {"enqueue": {"runs_per_s": 800.0}, "1_processes": drained(3500.0),
                         "2_processes": drained(6000.0)},
            },
            "chain_5": {
                "enqueue": {"runs_per_s": 300.0},
                "1_worker": drained(500.0), "2_workers": {"error": "boom"},
                "peer": {"enqueue": {"runs_per_s": 600.0}, "1_processes": drained(1000.0)},
            },
        },
        "claim_latency": latency(20.0, 40.0),
        "step_latency": latency(7.0, 30.0),
        "peer": {"latency": {"claim_latency": latency(2.0, 5.0),
                             "step_latency": latency(3.5, 10.0)}},
    }


def test_each_warden_figure_meets_the_peers_figure_for_the_same_shape() -> None:
    compared = comparison(_report())
    assert compared["one_step.1_worker.jobs_per_s"] == {
        "warden": 700.0, "pgqueuer": 3500.0, "ratio": 0.2}
    # both Warden configurations with two worker processes meet two pgqueuer processes
    assert compared["one_step.2_workers.jobs_per_s"]["ratio"] == 0.1
    assert compared["one_step.2_workers_2_serves.jobs_per_s"]["pgqueuer"] == 6000.0
    assert compared["one_step.enqueue_runs_per_s"]["ratio"] == 0.5
    assert compared["claim_latency.p50_ms"] == {"warden": 20.0, "pgqueuer": 2.0, "ratio": 10.0}
    assert compared["step_latency.p99_ms"]["ratio"] == 3.0


def test_a_figure_missing_on_either_side_has_no_ratio() -> None:
    compared = comparison(_report())
    assert compared["chain_5.2_workers.jobs_per_s"] == {
        "warden": None, "pgqueuer": None, "ratio": None}
    assert compared["claim_latency_low_rate.p50_ms"]["ratio"] is None
    assert set(compared) == set(summary(_report()))
    assert "chain_5.2_workers.jobs_per_s" in table(compared)
