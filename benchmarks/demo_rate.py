"""The demo's trials per minute: `make demo`'s command, run whole, against another build.

``make demo`` is what a new user runs first, and its rate is what every per-trial cost
adds up to: the orchestrator's bookkeeping, the build, the probe. This runs
``slimsearch run configs/digits.yaml`` from an empty output folder ``--runs`` times per
build, the builds alternating (so a drift of the host weighs on both), and prints for
each run the rate the command itself reports (evaluated trials per minute of the search),
its wall time (teacher training and the front's confirmation included), and the
driver's own time between one trial's end and the next one's start, read from the study.

Compare with an earlier commit in one sitting (a checkout with its own environment)::

    git worktree add /tmp/before <commit> && python3 -m venv /tmp/before-venv
    /tmp/before-venv/bin/pip install torch==2.13.0 && /tmp/before-venv/bin/pip install -e /tmp/before
    python benchmarks/demo_rate.py --against /tmp/before-venv/bin/slimsearch:/tmp/before/configs/digits.yaml

Run it on an idle host: it measures wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common import goal, provenance

ROOT = Path(__file__).resolve().parents[1]
RATE = re.compile(r"\(([0-9.]+) trials/min\)")


@dataclass(frozen=True)
class Build:
    name: str
    command: str
    config: Path


@dataclass(frozen=True)
class DemoRun:
    rate: float
    """Evaluated trials per minute, as the run printed it."""
    wall_s: float
    between_trials_s: float
    """Sum over consecutive trials of the gap between one's end and the next one's start."""
    trials: int


def run_demo(build: Build, folder: Path) -> DemoRun:
    folder.mkdir(parents=True)
    started = time.monotonic()
    done = subprocess.run([build.command, "run", str(build.config)], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    wall_s = time.monotonic() - started
    if done.returncode != 0 or not (rate := RATE.search(done.stdout)):
        last = ((done.stderr or done.stdout).strip().splitlines() or ["no output"])[-1]
        sys.exit(f"{build.name}: `{build.command} run` failed (exit {done.returncode}): {last}")
    with sqlite3.connect(folder / "slimsearch-out" / "optuna.db") as db:
        spans = db.execute("select datetime_start, datetime_complete from trials where datetime_complete is not null "
                           "order by number").fetchall()
    times = [(datetime.fromisoformat(start), datetime.fromisoformat(end)) for start, end in spans]
    gaps = [(following[0] - previous[1]).total_seconds() for previous, following in zip(times, times[1:])]
    return DemoRun(float(rate.group(1)), wall_s, sum(gaps), len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per build (default 3)")
    parser.add_argument("--against", help="another build as SLIMSEARCH_EXECUTABLE:CONFIG (e.g. an earlier commit's)")
    args = parser.parse_args()
    builds = [Build("this checkout", str(Path(sys.executable).parent / "slimsearch"), ROOT / "configs" / "digits.yaml")]
    if args.against:
        command, _, config = args.against.partition(":")
        builds.append(Build("against", command, Path(config)))
    print(provenance())
    print("make demo's command from an empty output folder; builds alternate")
    results: dict[str, list[DemoRun]] = {b.name: [] for b in builds}
    with tempfile.TemporaryDirectory(prefix="slimsearch-demo-rate-") as scratch:
        for index in range(args.runs):
            for build in builds:
                run = run_demo(build, Path(scratch) / f"{build.name.replace(' ', '-')}-{index}")
                results[build.name].append(run)
                print(f"  {build.name:13s} run {index + 1}: {run.rate:5.2f} trials/min, wall {run.wall_s:5.1f} s, "
                      f"driver between trials {run.between_trials_s:4.1f} s over {run.trials} trials", flush=True)
    medians = {name: statistics.median(r.rate for r in runs) for name, runs in results.items()}
    for name, runs in results.items():
        print(f"{name}: median {medians[name]:.2f} trials/min (runs {', '.join(f'{r.rate:.2f}' for r in runs)}), "
              f"median wall {statistics.median(r.wall_s for r in runs):.1f} s, median driver time between trials "
              f"{statistics.median(r.between_trials_s for r in runs):.1f} s")
    if args.against:
        ours, theirs = medians["this checkout"], medians["against"]
        goal("make demo trials per minute, this checkout / the build it is run against (median of runs)",
             f"{ours:.2f} / {theirs:.2f} = {ours / theirs:.2f}x", ">= 1x", ours >= theirs)


if __name__ == "__main__":
    main()
