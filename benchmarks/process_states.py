"""Per-process speed states: the 2-thread digits teacher timed in fresh processes.

``teacher_agreement`` misses its bound because one fresh process of the 2-thread digits
teacher serves it 20-50 % slower than the next, for the whole process, while the paired
reference workload beside it moves far less (so calibration cannot cancel it). This
script times the model in fresh bare processes (no probe: the state is not the probe's)
under a set of process set-ups, interleaved so a drift of the host hits every set-up
alike, and prints each process's median. A set-up that removed the cause would show no
slow processes; ``copies`` times six deep copies of the model inside one process, which
tells whether a new placement of the weights changes the state.

    .venv/bin/python benchmarks/process_states.py               # 8 processes per set-up
    .venv/bin/python benchmarks/process_states.py --processes 12 --setups default,thp
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from slimsearch.evaluators.serving import STEADY_MALLOC  # the malloc settings the serving probe runs with

from common import provenance

SLOW = 1.15
"""A process is slow when its median is this much above the fastest process of its set-up."""

CHILD = r'''
import copy, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from common import teacher
task, model = teacher("digits")
torch.set_num_threads(2)
batch = task.serving_batch(64)
copies = int(sys.argv[2])

def median_ms(net, calls=200):
    times = []
    for _ in range(calls):
        started = time.perf_counter(); net(batch); times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)

with torch.no_grad():
    nets = [model.eval()] + [copy.deepcopy(model) for _ in range(copies)]
    for net in nets:
        for _ in range(30):
            net(batch)
    print(" ".join(f"{median_ms(net):.3f}" for net in nets))
'''

SETUPS = {
    "default": ({}, []),
    "omp-bind": ({"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, []),
    "thp": ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, []),
    "no-aslr": ({}, ["setarch", "-R"]),
    "copies": ({}, []),
}
"""Set-up name -> (environment added, command prefix): the serving probe's malloc settings
plus OpenMP threads pinned one per core, the heap on transparent huge pages (physically
contiguous, so cache colouring is the same in every process), address randomisation off,
and six copies of the weights inside one process."""


def one_process(setup: str) -> list[float]:
    extra, prefix = SETUPS[setup]
    env = {**os.environ, **STEADY_MALLOC, **extra}
    copies = "6" if setup == "copies" else "0"
    done = subprocess.run([*prefix, sys.executable, "-c", CHILD, str(Path(__file__).parent), copies],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"process_states: a '{setup}' process failed (exit {done.returncode}): {last}")
    return [float(v) for v in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    args = parser.parse_args()
    setups = args.setups.split(",")
    unknown = set(setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown set-up {', '.join(sorted(unknown))}; the set-ups are {', '.join(SETUPS)}")
    print(f"# the 2-thread digits teacher, batch 64, in {args.processes} fresh processes per set-up -- {provenance()}")
    readings: dict[str, list[list[float]]] = {setup: [] for setup in setups}
    for _ in range(args.processes):
        for setup in setups:
            readings[setup].append(one_process(setup))
    print("| set-up | per-process median ms (sorted; copies: the original, then each copy) | slow processes | spread |")
    print("|---|---|---|---|")
    for setup, processes in readings.items():
        medians = sorted(p[0] for p in processes)
        fastest = medians[0]
        slow = sum(m > SLOW * fastest for m in medians)
        shown = ("; ".join(" ".join(f"{v:.2f}" for v in p) for p in processes) if setup == "copies"
                 else " ".join(f"{m:.2f}" for m in medians))
        spread = (medians[-1] - fastest) / statistics.median(medians)
        print(f"| {setup} | {shown} | {slow} of {len(medians)} | {100 * spread:.0f} % |")


if __name__ == "__main__":
    main()
