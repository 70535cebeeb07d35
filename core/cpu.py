"""How many CPU cores nobody is using right now: the rule for when a process may take two torch threads.

Two intra-op threads of one small network are about 1.3-1.7x faster than one on an idle 2-core
machine, and several times slower when another process keeps a core busy (the threads spin waiting
for each other; docs/world.md). So callers that start work after a busy phase ask how many cores
are idle at that moment instead of guessing from the load average, which still remembers the
busy phase a minute later.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores since boot; None where /proc/stat is missing."""
    try:
        first = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    return values[3] + values[4], sum(values[:8])  # idle + iowait; user..steal (guest is inside user)


def idle_cores(sample_s: float = 0.5) -> int:
    """Whole cores idle over the next ``sample_s`` seconds (at least 0, at most the machine's count).

    A core counts when at least 70 % of it was idle, so a machine whose second core is half busy
    reports one. Without /proc/stat: the core count minus the one-minute load average."""
    cores = os.cpu_count() or 1
    before = _cpu_times()
    if before is None:
        idle = cores - os.getloadavg()[0]
    else:
        time.sleep(sample_s)
        after = _cpu_times()
        total = after[1] - before[1]
        idle = cores * (after[0] - before[0]) / total if total > 0 else 0.0
    return max(0, min(cores, int(idle + 0.3)))
