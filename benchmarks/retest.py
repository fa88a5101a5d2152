"""Retest: the same candidates measured twice on an idle host, then beside a busy neighbour.

40 candidates drawn (seed 0) from a committed table (``benchmarks/tables/<task>.csv``) are
built from the bench stage cache and each served in the isolated probe three times: pass 1
and pass 2 on the idle host, pass 3 beside two busy-loop processes this script starts
(with ``max_outside_load = 1`` so every reading is kept; a search would have deferred the
ones it flags, and the MAPE is given for all readings and for those a search records).
The reference workload is calibrated once, at the start, as a study does
with its baseline. The MAPE of latency p50 between passes is the noise floor under any
cost predictor and the retest goal of issue 31 (<= 8 % idle, <= 15 % beside the load);
both the calibrated and the raw readings are compared, and each probe's wall time is
printed (the protocol's cost).

    .venv/bin/python benchmarks/retest.py            # both tables, ~30 min on 2 cores
    .venv/bin/python benchmarks/retest.py digits     # one
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from slimsearch.evaluators import ServingMeasurement, TimingProtocol, measure_serving, plan_ranks, save_artifact
from slimsearch.spaces import Candidate, suggest_candidate

from common import BATCH, cell, goal, pipeline, provenance
from measure_table import TABLE_SPACES, TABLES

COUNT = 40
BUSY_LOOPS = 2


def candidates(task: str, count: int) -> list[Candidate]:
    """``count`` measured candidates of the committed table, drawn with a fixed seed."""
    with open(TABLES / f"{task}.csv") as rows:
        params = [json.loads(row["params"]) for row in csv.DictReader(rows) if row["state"] == "COMPLETE"]
    chosen = random.Random(0).sample(params, count)
    return [suggest_candidate(optuna.trial.FixedTrial(p), TABLE_SPACES[task]) for p in chosen]


def mape(first: list[float], second: list[float]) -> float:
    return statistics.fmean(abs(b - a) / a for a, b in zip(first, second))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", nargs="?", choices=sorted(TABLE_SPACES), help="default: every table")
    parser.add_argument("--count", type=int, default=COUNT)
    args = parser.parse_args()
    for task in [args.task] if args.task else sorted(TABLE_SPACES):
        retest(task, args.count)


def retest(task: str, count: int) -> None:
    """Measure ``count`` candidates of ``task``'s table three times; print the comparison."""
    print(f"# retest of {count} candidates of the {task} table -- {provenance()}")
    built = pipeline(task)
    example = built.task.serving_batch(BATCH)
    with tempfile.TemporaryDirectory(prefix="slimsearch-retest-") as workdir:
        served = []
        started = time.perf_counter()
        for i, candidate in enumerate(candidates(task, count)):
            model = built.build(candidate).serving
            artifact = save_artifact(candidate.runtime, model, example, Path(workdir) / f"c{i}.pt")
            served.append((candidate, artifact, plan_ranks(model, example, candidate.strategy, candidate.degree, artifact)))
        print(f"built {len(served)} candidates in {time.perf_counter() - started:.0f} s")

        teacher = served[0]  # any fixed artifact: only its window's reference readings are used
        thread_counts = tuple(sorted({candidate.threads for candidate, _, _ in served}))
        calibration = measure_serving(teacher[1], teacher[2], example, threads=max(thread_counts),
                                      protocol=TimingProtocol(calibrate_threads=thread_counts), timeout_s=600)
        references = calibration.reference_by_threads
        print("reference workload calibrated at " + ", ".join(f"{ms:.3f} ms on {threads} thread(s)"
                                                                for threads, ms in references.items()))

        def measure(protocol: TimingProtocol) -> tuple[list[ServingMeasurement], list[float]]:
            readings, seconds = [], []
            for candidate, artifact, plan in served:
                begun = time.perf_counter()
                calibrated = dataclasses.replace(protocol, reference_ms=references[candidate.threads])
                readings.append(measure_serving(artifact, plan, example, threads=candidate.threads,
                                                protocol=calibrated, timeout_s=600))
                seconds.append(time.perf_counter() - begun)
            return readings, seconds

        protocol = TimingProtocol()
        first, seconds = measure(protocol)
        second, _ = measure(protocol)
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY_LOOPS)]
        try:
            time.sleep(1)
            loaded, _ = measure(dataclasses.replace(protocol, max_outside_load=1.0))
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
    print(f"probe wall time per candidate: median {statistics.median(seconds):.2f} s, max {max(seconds):.2f} s")
    limit = TimingProtocol().max_outside_load
    kept = [i for i, m in enumerate(loaded) if m.outside_load_max <= limit]
    print("| candidate | p50 ms pass 1 / 2 / busy (calibrated) | raw busy | outside load busy | recorded |")
    print("|---|---|---|---|---|")
    for i, (candidate, _, _) in enumerate(served):
        print(f"| {cell(candidate.summary())} | {first[i].latency.p50_ms:.3f} / {second[i].latency.p50_ms:.3f} / "
              f"{loaded[i].latency.p50_ms:.3f} | {loaded[i].raw_latency.p50_ms:.3f} | {loaded[i].outside_load_max:.2f} "
              f"| {'yes' if i in kept else 'deferred'} |")
    print("| pair | readings | MAPE calibrated p50 | MAPE raw p50 |")
    print("|---|---|---|---|")
    busy = f"idle vs {BUSY_LOOPS} busy loops"
    pairs = {"idle vs idle": (second, list(range(len(served)))), f"{busy}, all": (loaded, list(range(len(served)))),
             f"{busy}, as a search records them": (loaded, kept)}
    figures = {}
    for name, (other, which) in pairs.items():
        calibrated = mape([first[i].latency.p50_ms for i in which], [other[i].latency.p50_ms for i in which])
        raw = mape([first[i].raw_latency.p50_ms for i in which], [other[i].raw_latency.p50_ms for i in which])
        figures[name] = calibrated
        print(f"| {name} | {len(which)} | {100 * calibrated:.1f} % | {100 * raw:.1f} % |")
    print(f"beside the busy loops, {len(served) - len(kept)} of {len(served)} readings exceeded max_outside_load "
          f"{limit}: a search defers those (measures them again later) instead of recording them")
    goal(f"retest latency p50 MAPE, {task}, idle", f"{100 * figures['idle vs idle']:.1f} %", "<= 8 %",
         figures["idle vs idle"] <= 0.08)
    recorded = figures[f"{busy}, as a search records them"]
    goal(f"retest latency p50 MAPE, {task}, beside {BUSY_LOOPS} busy loops, recorded readings",
         f"{100 * recorded:.1f} % ({len(kept)} of {len(served)} recorded)", "<= 15 %", recorded <= 0.15)


if __name__ == "__main__":
    main()
