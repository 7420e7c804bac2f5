"""Optional py-spy sampling of the children during a drain (``--profile``).

py-spy reads the stacks from outside (``--nonblocking``: the target is never paused), so
the children run unmodified. The summary names the functions the busy samples went to,
by leaf (self) and by engine frame anywhere on the stack (inclusive). Each recording
should lie inside the drain: a child idling after it would only add idle samples.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.children import Child

RATE_HZ = 100

# Leaf files grouped into the layers a reader can act on.
_PACKAGES = ("engine/", "bench/", "psycopg_pool/", "psycopg/", "asyncio/", "logging/",
             "json/", "uvicorn/", "starlette/", "selectors", "uuid", "dataclasses", "enum")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profiler:
    folder: Path
    seconds: float
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    def start(self, children: list[Child]) -> None:
        binary = py_spy()
        if binary is None:
            return
        for child in children:
            out = self.folder / f"{child.name}.folded"
            cmd = [binary, "record", "--pid", str(child.proc.pid), "--duration",
                   str(int(self.seconds)), "--rate", str(RATE_HZ), "--format", "raw",
                   "--output", str(out), "--nonblocking"]
            self.running[child.name] = (
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                out)

    async def results(self) -> dict[str, Any]:
        """Waits (bounded) for every recording and summarises it."""
        if py_spy() is None:
            return {"error": "py-spy not found (pip install py-spy)"}
        summaries: dict[str, Any] = {}
        for name, (proc, out) in self.running.items():
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), self.seconds + 15)
            except TimeoutError:
                proc.kill()
            summaries[name] = summarise(out) if out.exists() else {
                "error": f"py-spy exited with {proc.returncode}"}
        return summaries


def summarise(folded: Path, top: int = 10) -> dict[str, Any]:
    """Shares of the busy samples: samples whose leaf is the event loop's epoll wait are
    the process idling (py-spy --nonblocking records them too) and are counted apart."""
    leaf: Counter[str] = Counter()
    package: Counter[str] = Counter()
    engine_inclusive: Counter[str] = Counter()
    idle = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        if frames[-1].endswith("Selector.select"):
            idle += count
            continue
        leaf[frames[-1]] += count
        package[_package(frames[-1])] += count
        for frame in set(frames):
            if frame.startswith(("engine/", "bench/")):
                engine_inclusive[frame] += count
    busy = sum(leaf.values())

    def shares(counter: Counter[str]) -> dict[str, float]:
        return {k: round(v / busy, 3) for k, v in counter.most_common(top)} if busy else {}

    return {"samples": busy + idle, "idle_share": round(idle / ((busy + idle) or 1), 3),
            "busy_self_by_package": shares(package), "busy_self_top": shares(leaf),
            "busy_inclusive_engine": shares(engine_inclusive)}


def _function(frame: str) -> str:
    """'claim (engine/store/jobs.py:42)' → 'engine/store/jobs.py:claim' (lines merged)."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{path}:{name}"


def _package(function: str) -> str:
    return next((p.rstrip("/") for p in _PACKAGES if function.startswith(p)), "other")
