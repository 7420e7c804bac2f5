"""CPU time from /proc (Linux): the children, their server backends and the whole host.

The bench runs next to the database server on one host, so the split between Python
processes and PostgreSQL backends shows which side of the wire a drain is bound by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a live process; 0.0 if it is gone or not visible."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # the command name may contain spaces: fields are counted after its closing ')'
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


@dataclass(frozen=True)
class HostCpu:
    busy: float
    iowait: float
    total: float

    @classmethod
    def now(cls) -> HostCpu:
        values = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle, iowait = values[3], values[4]
        total = sum(values[:8])  # guest time is already counted in user
        return cls(busy=total - idle - iowait, iowait=iowait, total=total)

    def since(self, earlier: HostCpu) -> dict[str, float]:
        """Shares of all CPUs' time between two readings."""
        total = (self.total - earlier.total) or 1.0
        return {"busy": round((self.busy - earlier.busy) / total, 3),
                "iowait": round((self.iowait - earlier.iowait) / total, 3)}


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
