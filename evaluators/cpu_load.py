"""How busy *other* work kept this process's cores during a timed window (Linux /proc).

On a shared 2-core host a neighbour inflates latency 2-3.5x; a round timed while the
rank's own pinned cores were busy with someone else's work (or stolen by the hypervisor)
is not a measurement of the model. Outside load = (busy jiffies of our cores, steal
included, minus this process's own CPU time) / (wall jiffies x number of our cores).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuSnapshot:
    busy: int
    """Non-idle jiffies summed over the watched cores (steal counts as busy)."""
    total: int
    own: int
    """This process's user + system jiffies (all threads)."""


def snapshot(cores: list[int]) -> CpuSnapshot:
    busy = total = 0
    per_cpu = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *fields = line.split()
            per_cpu[int(name[3:])] = [int(v) for v in fields]
    for core in cores:
        user, nice, system, idle, iowait, irq, softirq, steal = (per_cpu[core] + [0] * 8)[:8]
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    stat = Path("/proc/self/stat").read_text()
    after_name = stat[stat.rindex(")") + 2 :].split()
    own = int(after_name[11]) + int(after_name[12])  # utime, stime (fields 14 and 15)
    return CpuSnapshot(busy, total, own)


def outside_load(before: CpuSnapshot, after: CpuSnapshot) -> float:
    """Fraction of the watched cores' time spent on other work between two snapshots."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    foreign = (after.busy - before.busy) - (after.own - before.own)
    return min(1.0, max(0.0, foreign / elapsed))
