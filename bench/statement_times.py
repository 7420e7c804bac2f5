"""Where a worker's two calls spend their time, statement by statement.

    .venv/bin/python bench/statement_times.py [--runs 60] [--fan-out 100] [--batch 32]
                                              [--cycles 60] [--setup FILE]

`bench/worker_calls.py` times `warden.claim_jobs` and `warden.complete_jobs` as a whole
and per nested function; this splits each into its top-level statements. In its own
bench database (dropped at the end) it re-creates both functions from their files in
`sql/functions/` with a probe (`public.warden_bench_mark`, bench/queries.sql) before each
top-level statement, and inside the claim's loop over the claimed jobs; then claims and
completes ``--batch`` jobs at a time from one connection, as worker_calls does, and
prints the milliseconds per call of each segment (from one probe to the next: a
statement, or an IF/FOR block with everything in it). ``--setup FILE`` runs SQL of yours
first (an index dropped, a helper replaced) to see what a piece costs. ``--warmup``
cycles first, not counted: the session's first calls make its plans. The probes cost
~5 us each, outside the segments; `auto_explain`'s nested durations, by contrast, are
charged the writing of every nested plan to the log (bench/README.md, session 16).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# a statement of a function body's outer block: four spaces in, after a statement ended
_STATEMENT = re.compile(r"^    (WITH|SELECT|UPDATE|PERFORM|INSERT|IF|FOR|FOREACH|RETURN)\b")
# the claim's loop over the claimed jobs: its body, per job (the query before it runs
# whole, CTEs and UPDATE included, at the loop's first fetch)
_CLAIM_LOOP_BODY = ("        -- Each run is locked once per claim, and the events of all"
                    " the claim's runs are")


def instrument(source: str, extra_probes: dict[str, str]) -> tuple[str, list[str]]:
    """The function's CREATE statement with a probe before each top-level statement, and
    the probes' labels in order."""
    body = source.split("\nREVOKE")[0]
    out: list[str] = []
    labels: list[str] = []
    inside = False
    last_code = ""

    def probe(label: str, indent: str = "    ") -> None:
        out.append(f"{indent}PERFORM public.warden_bench_mark('{label}');")
        labels.append(label)

    for line in body.split("\n"):
        code = line.split("--")[0].rstrip()
        if line.startswith("END $$"):
            out.append("    PERFORM public.warden_bench_mark('end');")
            inside = False
        elif inside and _STATEMENT.match(line) and last_code.endswith((";", "THEN", "LOOP")):
            words = re.sub(r"\W+", "_", line.strip()[:36]).strip("_").lower()
            probe(f"s{len(labels) + 1:02d}_{words}")
        for marker, label in extra_probes.items():
            if line == marker:
                probe(label, "        ")
        out.append(line)
        if line.startswith("BEGIN"):
            inside = True
            last_code = "BEGIN;"
        elif code.strip():
            last_code = code
    missing = [label for label in extra_probes.values() if label not in labels]
    if missing:  # the function's text moved: say so rather than time a different split
        raise ValueError(f"no line for the probes {missing} in the function's text")
    return "\n".join(out) + "\n", labels


async def main() -> None:
    from bench import pg
    from bench.databases import BenchDatabases
    from bench.worker_calls import one_cycle, queued

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--fan-out", type=int, default=100, metavar="WIDTH",
                        help="runs of WIDTH parallel steps; 0: one-step runs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--setup", type=Path, default=None, metavar="FILE",
                        help="SQL run as the admin once the functions are in place: what-ifs "
                             "such as an index dropped, to see what it costs")
    args = parser.parse_args()
    functions = ROOT / "sql" / "functions"
    claim, claim_labels = instrument((functions / "claim_jobs.sql").read_text(),
                                     {_CLAIM_LOOP_BODY: "claim_loop_body_per_job"})
    complete, complete_labels = instrument((functions / "complete_jobs.sql").read_text(), {})
    dbs = BenchDatabases.for_this_process()
    try:
        await dbs.prepare()
        url = await queued(dbs, args.runs, args.fan_out or None)
        conn = await pg.connect(url)
        try:
            await pg.execute(conn, "statement_mark_function")
            # the bench's admin login is a superuser; the functions stay the owner's
            await conn.execute(f"SET ROLE warden_owner;\n{claim}\n{complete}\nRESET ROLE;")
            if args.setup is not None:
                await conn.execute(args.setup.read_text())
            labels = [*claim_labels, *complete_labels]
            cycles = 0
            before: dict[str, Any] = {}
            while cycles < args.warmup + args.cycles:
                if cycles == args.warmup:
                    before = {r["label"]: r for r in await pg.rows(
                        conn, "statement_times", {"labels": labels})}
                claimed, _, _ = await one_cycle(conn, args.batch)
                if not claimed:
                    raise RuntimeError(f"the queue ran dry after {cycles} cycles: "
                                       "ask for fewer --cycles or more --runs")
                cycles += 1
            after = await pg.rows(conn, "statement_times", {"labels": labels})
        finally:
            await conn.close()
    finally:
        await dbs.drop_all()

    def segments(names: list[str]) -> dict[str, Any]:
        rows = {r["label"]: r for r in after if r["label"] in names}
        return {n: {"ms_per_call": round((rows[n]["seconds"] - before[n]["seconds"])
                                         * 1e3 / args.cycles, 3),
                    "per_call": round((rows[n]["n"] - before[n]["n"]) / args.cycles, 2)}
                for n in names}

    print(json.dumps({"runs": args.runs, "fan_out": args.fan_out, "batch": args.batch,
                      "cycles": args.cycles, "claim_jobs": segments(claim_labels),
                      "complete_jobs": segments(complete_labels)}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
