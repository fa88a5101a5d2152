"""Host speed states: are they the process's or the host's, and who do they hit?

``teacher_agreement`` misses its bound because the 2-thread digits teacher reads 20-50 %
slower in some probes than in others. Short fresh processes made that look like a state
of the process; this script tells the two apart and measures what the paired reference
(``evaluators.paired_timing``) can cancel of it.

- ``together``: several long-lived processes serve the teacher, taking turns block by
  block, for ``--seconds``. A state of the process shows as one process slow while the
  others are fast; a state of the host as all of them slow in the same blocks.
- ``sensitivity``: one process times the teacher, digits students of several widths and
  depths (random weights: latency does not depend on them; traced and frozen as served)
  and the reference workload, interleaved block by block. Blocks are split into the
  host's fast and slow state by the teacher's reading, and each workload's median is
  printed in both: a reference cancels the state only for a model it slows alike.

    .venv/bin/python benchmarks/host_states.py                       # both parts, 5 min each
    .venv/bin/python benchmarks/host_states.py --part together --seconds 120
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from slimsearch.evaluators.paired_timing import reference_workload
from slimsearch.evaluators.serving import STEADY_MALLOC  # the malloc settings the serving probe runs with
from slimsearch.pipelines.digits import DigitsCNN

from common import BATCH, provenance, teacher

THREADS = 2
"""The teacher's deployment in ``teacher_agreement`` (single, 2 threads)."""
SLOW = 1.10
"""A block is in the slow state when the teacher reads this much above its 10th percentile."""
SLICES = 10
STUDENTS = {"w0.25 d3": (0.25, 3), "w0.5 d3": (0.5, 3), "w1 d2": (1.0, 2), "w0.5 d1": (0.5, 1), "w2 d3": (2.0, 3)}


def block_median_ms(call: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def serve_turns() -> None:
    """Child of ``together``: time a block of the teacher whenever a line arrives on stdin."""
    task, model = teacher("digits")
    torch.set_num_threads(THREADS)
    batch = task.serving_batch(BATCH)
    with torch.no_grad():
        model.eval()
        block_median_ms(lambda: model(batch), 30)
        print("ready", flush=True)
        for _ in sys.stdin:
            print(f"{block_median_ms(lambda: model(batch), 40):.3f}", flush=True)


def together(processes: int, seconds: float) -> None:
    command = [sys.executable, str(Path(__file__)), "--part", "serve-turns"]
    children = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(processes)]
    rows: list[list[float]] = []
    try:
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"host_states: a serving process failed to start (exit {child.wait()})")
        started = time.time()
        while time.time() - started < seconds:
            row = []
            for child in children:
                child.stdin.write("go\n")
                child.stdin.flush()
                row.append(float(child.stdout.readline()))
            rows.append(row)
    finally:
        for child in children:
            child.stdin.close()
            child.wait()
    print(f"## together: {processes} long-lived processes serving the teacher ({THREADS} threads, batch {BATCH}) "
          f"in turns, {len(rows)} blocks of 40 calls over {seconds:.0f} s")
    floor = statistics.quantiles([v for row in rows for v in row], n=10)[0]
    slow = [[v > SLOW * floor for v in row] for row in rows]
    all_slow = sum(all(s) for s in slow)
    some_slow = sum(any(s) and not all(s) for s in slow)
    print(f"10th percentile of all blocks {floor:.2f} ms; a block is slow above {SLOW:.2f}x that")
    print("| blocks | all processes slow together | some slow, some fast | all fast |")
    print("|---|---|---|---|")
    print(f"| {len(rows)} | {all_slow} | {some_slow} | {len(rows) - all_slow - some_slow} |")
    print("each process's median (ms) over consecutive tenths of the run: a column moving alone is the "
          "process's state, a row moving together the host's")
    print("| tenth | " + " | ".join(f"process {i + 1}" for i in range(processes)) + " |")
    print("|---|" + "---|" * processes)
    for index in range(SLICES):
        part = rows[index * len(rows) // SLICES:(index + 1) * len(rows) // SLICES]
        if part:
            print(f"| {index + 1} | " + " | ".join(f"{statistics.median(col):.2f}" for col in zip(*part)) + " |")


def sensitivity(seconds: float) -> None:
    task, model = teacher("digits")
    torch.set_num_threads(THREADS)
    batch = task.serving_batch(BATCH)

    def served(net: torch.nn.Module) -> Callable[[], object]:
        frozen = torch.jit.freeze(torch.jit.trace(net.eval(), batch))
        return lambda: frozen(batch)

    with torch.no_grad():
        workloads = {"teacher w1 d3": served(model), **{name: served(DigitsCNN(*shape)) for name, shape in STUDENTS.items()},
                     "reference": reference_workload()}
        for call in workloads.values():
            block_median_ms(call, 20)
        readings: dict[str, list[float]] = {name: [] for name in workloads}
        started = time.time()
        while time.time() - started < seconds:
            for name, call in workloads.items():
                readings[name].append(block_median_ms(call, 20))
    teacher_blocks = readings["teacher w1 d3"]
    floor = statistics.quantiles(teacher_blocks, n=10)[0]
    slow = [v > SLOW * floor for v in teacher_blocks]
    print(f"## sensitivity: {len(workloads)} workloads interleaved in one process ({THREADS} threads, batch {BATCH}), "
          f"{len(teacher_blocks)} blocks of 20 calls each over {seconds:.0f} s; {sum(slow)} blocks in the slow state "
          f"(teacher above {SLOW:.2f}x its 10th percentile)")
    if not any(slow) or all(slow):
        print("the host stayed in one state for the whole run: no comparison (run it again, or longer)")
        return
    def in_state(name: str, wanted: bool) -> float:
        return statistics.median(v for v, s in zip(readings[name], slow) if s == wanted)

    reference_ratio = in_state("reference", True) / in_state("reference", False)
    print("| workload | median ms, fast blocks | median ms, slow blocks | slow / fast | left after pairing with "
          "the reference |")
    print("|---|---|---|---|---|")
    for name in readings:
        ratio = in_state(name, True) / in_state(name, False)
        print(f"| {name} | {in_state(name, False):.3f} | {in_state(name, True):.3f} | {ratio:.2f}x | "
              f"{100 * (ratio / reference_ratio - 1):+.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["both", "together", "sensitivity", "serve-turns"], default="both",
                        help="serve-turns is the child process of 'together'")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    if any(os.environ.get(name) != value for name, value in STEADY_MALLOC.items()):  # as the probe's heap behaves
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_MALLOC})
    if args.part == "serve-turns":
        serve_turns()
        return
    print(f"# host speed states, digits models on {THREADS} threads -- {provenance()}")
    if args.part in ("both", "together"):
        together(args.processes, args.seconds)
    if args.part in ("both", "sensitivity"):
        sensitivity(args.seconds)


if __name__ == "__main__":
    main()
