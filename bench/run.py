"""Warden's benchmark: `python bench/run.py [--quick] [--profile] [--keep-logs]`.

Prints ONE JSON document on stdout (progress goes to stderr). It creates its own
databases on the server named by WARDEN_BENCH_DATABASE_URL (an admin URL, default
postgresql://postgres@127.0.0.1:5432/postgres), measures, and drops them at the end,
also on Ctrl-C, SIGTERM or errors. Durability settings are reported, never changed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import drain, growth, latency, peer  # after the path is set (sys.path.insert)
from bench.cpu import cpu_count
from bench.databases import BenchDatabases
from bench.plan import POLL_INTERVAL_MS, Bench, Plan
from bench.workload import Shape, chain, fan_out, one_step

# what --only may name: the throughput shapes (fan_out_100 at either size), then phases
ONLY_CHOICES = ("one_step", "fan_out_100", "chain_5", "batch_start", "latency")
# (name, worker processes, serve processes); the fan-out shape runs the first two
CONFIGS = [("1_worker", 1, 1), ("2_workers", 2, 1), ("2_workers_2_serves", 2, 2)]
# the peer's process count for each configuration (pgqueuer has no serve)
PEER_PROCESSES = {"1_worker": 1, "2_workers": 2, "2_workers_2_serves": 2}
_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


async def phase(name: str, errors: list[str],
                body: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """One measurement; a failure is reported in the JSON and the others still run."""
    progress(f"{name} …")
    try:
        result = await body()
    except Exception as exc:
        progress(f"{name} FAILED: {exc!r}")
        errors.append(f"{name}: {exc!r}")
        return {"error": repr(exc)}
    progress(f"{name}: {_headline(result)}")
    return result


def _headline(result: dict[str, Any]) -> str:
    if "jobs_per_s" in result:
        return (f"{result['jobs_per_s']} jobs/s, {result['runs_per_s']} runs/s "
                f"in {result['drain_s']} s")
    if "runs_per_s" in result:
        events = f" ({result['events_per_s']} events/s)" if "events_per_s" in result else ""
        return f"{result['runs_per_s']} runs/s{events}"
    latency = result.get("latency", {})
    return f"p50 {latency.get('p50_ms')} ms, p99 {latency.get('p99_ms')} ms"


async def throughput(bench: Bench, errors: list[str],
                     peers: peer.PeerDatabases | None,
                     only: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Each shape is enqueued once, then drained by each configuration from a clone; then
    the same for the peer (pgqueuer), one drain per process count."""
    plan = bench.plan
    shapes: list[tuple[str, Shape, list[tuple[str, int, int]]]] = [
        ("one_step", one_step(plan.jobs), CONFIGS),
        (f"fan_out_{plan.fan_width}", fan_out(plan.jobs // plan.fan_width, plan.fan_width),
         CONFIGS[:2]),
        ("chain_5", chain(plan.jobs // 5), CONFIGS[:2])]
    out: dict[str, Any] = {}
    for key, shape, configs in shapes:
        if only and key not in only:
            continue
        title = f"{shape.runs} runs x {len(shape.steps)} steps"
        enqueued = await phase(f"enqueue {title}", errors, partial(drain.enqueue, bench, shape))
        out[key] = {"enqueue": enqueued}
        if "error" not in enqueued:
            for name, workers, serves in configs:
                out[key][name] = await phase(
                    f"drain {title}, {name}", errors,
                    partial(drain.drain, bench, shape, enqueued, workers=workers, serves=serves))
        if peers is not None:
            out[key]["peer"] = await _peer_throughput(bench, errors, peers, shape, title,
                                                      configs)
    return out


async def _peer_throughput(bench: Bench, errors: list[str], peers: peer.PeerDatabases,
                           shape: Shape, title: str,
                           configs: list[tuple[str, int, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {"enqueue": await phase(
        f"pgqueuer enqueue {title}", errors, partial(peer.enqueue, bench, peers, shape))}
    if "error" in out["enqueue"]:
        return out
    for processes in sorted({PEER_PROCESSES[name] for name, _, _ in configs}):
        out[f"{processes}_processes"] = await phase(
            f"pgqueuer drain {title}, {processes} processes x {peer.CONSUMERS} consumers",
            errors, partial(peer.drain, bench, peers, shape, processes=processes))
    return out


async def peer_latency(bench: Bench, errors: list[str],
                       peers: peer.PeerDatabases) -> dict[str, Any]:
    """The peer's enqueue → pick-up at the same rates, and its step → step on chains."""
    plan = bench.plan
    out: dict[str, Any] = {}
    for key, rate in (("claim_latency", plan.latency_rate),
                      ("claim_latency_low_rate", plan.idle_rate)):
        shape = one_step(int(rate * plan.latency_seconds))
        out[key] = await phase(f"pgqueuer enqueue→pick-up latency at {rate:g}/s", errors,
                               partial(peer.latency, bench, peers, shape, rate))
    out["step_latency"] = await phase(
        "pgqueuer step→step latency", errors,
        partial(peer.latency, bench, peers, chain(plan.chains), plan.chain_rate))
    return out


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, repeated at the top of the document."""
    return {key: pair[0] for key, pair in _pairs(report).items()}


def comparison(report: dict[str, Any]) -> dict[str, Any]:
    """Every headline figure beside the peer's, and warden/peer: above 1 Warden is faster
    for a rate (per second), slower for a latency (ms)."""
    out: dict[str, Any] = {}
    for key, (warden, other) in _pairs(report).items():
        ratio = round(warden / other, 3) if warden and other else None
        out[key] = {"warden": warden, "pgqueuer": other, "ratio": ratio}
    return out


def _pairs(report: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """(Warden's figure, the peer's for the same shape) per headline key."""
    out: dict[str, tuple[Any, Any]] = {}
    for shape, results in report.get("throughput", {}).items():
        theirs = results.get("peer", {})
        out[f"{shape}.enqueue_runs_per_s"] = (results["enqueue"].get("runs_per_s"),
                                              theirs.get("enqueue", {}).get("runs_per_s"))
        for name, _, _ in CONFIGS:
            if name in results:
                peer_run = theirs.get(f"{PEER_PROCESSES[name]}_processes", {})
                out[f"{shape}.{name}.jobs_per_s"] = (results[name].get("jobs_per_s"),
                                                     peer_run.get("jobs_per_s"))
    out["batch_start.runs_per_s"] = (report.get("batch_start", {}).get("runs_per_s"),
                                     report.get("peer", {}).get("batch_start", {})
                                     .get("runs_per_s"))
    peer_latency = report.get("peer", {}).get("latency", {})
    for name in ("claim_latency", "claim_latency_low_rate", "step_latency"):
        ours = report.get(name, {}).get("latency", {})
        theirs = peer_latency.get(name, {}).get("latency", {})
        for q in ("p50_ms", "p99_ms"):
            out[f"{name}.{q}"] = (ours.get(q), theirs.get(q))
    return out


def table(compared: dict[str, Any]) -> str:
    """The comparison for people (stderr; stdout stays one JSON document)."""
    rows = [("measure", "warden", "pgqueuer", "warden/pgqueuer")]
    rows += [(key, _cell(v["warden"]), _cell(v["pgqueuer"]), _cell(v["ratio"]))
             for key, v in compared.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                      for r in rows)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


async def measure_all(report: dict[str, Any], bench: Bench, errors: list[str],
                      peers: peer.PeerDatabases | None,
                      only: frozenset[str] = frozenset()) -> None:
    """Measurements 1 to 3 (and the batch start), each beside the peer's; ``only``: the
    throughput shapes and phases (ONLY_CHOICES) to run, all when empty."""
    report["throughput"] = await throughput(bench, errors, peers, only)
    if not only or "batch_start" in only:
        await _batch_start(report, bench, errors, peers)
    if not only or "latency" in only:
        await _latencies(report, bench, errors, peers)


async def _batch_start(report: dict[str, Any], bench: Bench, errors: list[str],
                       peers: peer.PeerDatabases | None) -> None:
    plan = bench.plan
    report["batch_start"] = await phase(
        f"batch start of {plan.jobs} one-step runs, {plan.batch_size} per call", errors,
        partial(drain.batch_start, bench, one_step(plan.jobs)))
    if peers is not None:
        report["peer"]["batch_start"] = await phase(
            f"pgqueuer batch enqueue of {plan.jobs} jobs, {plan.batch_size} per call",
            errors, partial(peer.batch_start, bench, peers, one_step(plan.jobs)))


async def _latencies(report: dict[str, Any], bench: Bench, errors: list[str],
                     peers: peer.PeerDatabases | None) -> None:
    plan = bench.plan
    report["claim_latency"] = await phase(
        f"enqueue→claim latency at {plan.latency_rate:g}/s", errors,
        partial(latency.claim_latency, bench, plan.latency_rate))
    report["claim_latency_low_rate"] = await phase(
        f"enqueue→claim latency at {plan.idle_rate:g}/s", errors,
        partial(latency.claim_latency, bench, plan.idle_rate))
    report["step_latency"] = await phase("step→step latency", errors,
                                         partial(latency.step_latency, bench))
    if peers is not None:
        report["peer"]["latency"] = await peer_latency(bench, errors, peers)


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    dbs = BenchDatabases.for_this_process()
    plan = Plan.make(quick=args.quick, profile=args.profile,
                     start_dispatch=not args.no_start_dispatch)
    logs = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    errors: list[str] = []
    report: dict[str, Any] = {
        "benchmark": "warden", "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "server": {**await dbs.server_facts(), "client_cpu_count": cpu_count(),
                   "loadavg_at_start": list(os.getloadavg())},
        "config": {**asdict(plan), "poll_interval_ms": POLL_INTERVAL_MS,
                   "policy_default": "allow", "database": dbs.name},
    }
    bench = Bench(plan, dbs, logs)
    peers = None if args.no_peer or args.growth else peer.PeerDatabases.beside(bench)
    if peers is not None:
        report["peer"] = {**peer.facts(), "database": peers.name}
    try:
        progress(f"migrating template {dbs.template} (logs in {logs})")
        await dbs.prepare()
        if args.growth:
            sizes = growth.GrowthPlan(
                runs=plan.jobs, history_jobs=100_000 if args.quick else 1_000_000,
                events_per_job=5, hold_s=60.0 if args.quick else 600.0,
                latency_runs=int(plan.idle_rate * plan.latency_seconds))
            report["growth"] = await phase("growth", errors, partial(
                growth.growth, bench, sizes, progress))
        else:
            await measure_all(report, bench, errors, peers,
                              frozenset(filter(None, args.only.split(","))))
    finally:
        await dbs.drop_all()
        if peers is not None:
            await peers.drop_all()
        if args.keep_logs:
            progress(f"logs kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - _T0, 1)
    report["errors"] = errors
    head: dict[str, Any] = {"summary": summary(report)}
    if peers is not None:
        head["comparison"] = comparison(report)
    return {**head, **report}, errors


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so the finally blocks stop the children
    # and drop the databases
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if not (args.no_peer or args.growth) and (why := peer.missing()) is not None:
        progress(f"the peer cannot run: {why}")
        return 2
    report, errors = await run(args)
    if "comparison" in report:
        progress("warden beside pgqueuer (ratio = warden/pgqueuer: above 1 Warden is "
                 "faster for /s, slower for ms)\n" + table(report["comparison"]))
    print(json.dumps(report, indent=2, default=str))
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~10x smaller: 2,000 jobs per drain")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the first serve and worker during each drain")
    parser.add_argument("--keep-logs", action="store_true", help="keep the children's logs")
    parser.add_argument("--no-start-dispatch", action="store_true",
                        help="starts leave their first steps to the scheduler (the A/B of "
                             "dispatching in the start's transaction)")
    parser.add_argument("--growth", action="store_true",
                        help="only measurement 5: drain rate and claim latency on empty "
                             "tables, with 1M finished jobs / 5M events (--quick: 100k / "
                             "500k), and while a transaction is held open 10 min (--quick: "
                             "1 min); no peer")
    parser.add_argument("--only", default="", metavar="NAMES",
                        help="comma-separated subset to run (for an A/B): "
                             + ", ".join(ONLY_CHOICES))
    parser.add_argument("--no-peer", action="store_true",
                        help="skip the peer (pgqueuer, from the bench extra)")
    args = parser.parse_args()
    unknown = set(filter(None, args.only.split(","))) - set(ONLY_CHOICES)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))} "
                     f"(choose from {', '.join(ONLY_CHOICES)})")
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        progress("interrupted: children stopped, databases dropped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
