"""Compression achieved: per built-in task, the teacher against the search's front.

Runs the default search (the embedded config's space, objectives, constraint and
budget) on each built-in task and prints the teacher's measurement next to every front
point: model bytes, MACs, p50/p95 latency and memory at batch 64, accuracy and drop,
each size/latency/memory also as a factor of the teacher's, and the quantization path
that ran. Bit widths below 8 are fake-quant: their rows say ``simulated`` and are never
counted towards a goal. Judged by the goals of issue 6:

* digits: some trial with drop <= 1 %, >= 3.5x smaller model bytes and >= 1.5x lower
  p50 than the teacher;
* digits-transformer: the teacher with dynamic int8 (enqueued, so always measured)
  >= 3x smaller at drop <= 1 %.

    .venv/bin/python benchmarks/compression.py [--trials 24]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.store.pareto import front_trials, noise_aware_front
from slimsearch.search.store.study import load_existing_study

from common import cell, goal, provenance, run_search

MB = 1024 * 1024
TEACHER_INT8 = {"student": "teacher", "prune.ratio": 0.0, "quantize.bits": 8, "parallel.runtime": "torch",
                "parallel.strategy": "single", "parallel.threads": 2}


def row(label: str, metrics: dict[str, Any], teacher: dict[str, Any], path: str, simulated: bool) -> str:
    def factor(key: str) -> str:
        return f"{teacher[key] / metrics[key]:.2f}x" if metrics[key] else "-"

    return (f"| {label} | {metrics['model_mb'] * 1024:.0f} KiB ({factor('model_mb')}) | {metrics['macs'] / 1e6:.2f} M | "
            f"{metrics['latency_p50_ms']:.2f} ({factor('latency_p50_ms')}) | {metrics['latency_p95_ms']:.2f} | "
            f"{metrics['memory_mb']:.1f} ({factor('memory_mb')}) | {metrics['accuracy']:.4f} | "
            f"{100 * metrics['accuracy_drop']:+.2f} % | {path}{' (simulated)' if simulated else ''} |")


def front_table(study: optuna.Study, teacher: dict[str, Any]) -> None:
    """Print the teacher's row and every front point's, factors against the teacher; a point that
    wins only within measurement noise says so (the product's review does the same)."""
    print("| point | model | MACs | p50 ms | p95 ms | memory MiB | accuracy | drop | quantization |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(row("teacher (fp32)", teacher, teacher, "fp32", False))
    _, within = noise_aware_front(study)
    for trial in front_trials(study):
        noise = f" (within noise of #{within[trial.number]})" if trial.number in within else ""
        print(row(f"#{trial.number} {cell(trial.user_attrs['summary'])}{noise}", trial.user_attrs["metrics"], teacher,
                  trial.user_attrs["tags"]["quant_path"], trial.user_attrs["simulated"]))


def shrinks(trial: FrozenTrial, teacher: dict[str, Any], size: float, speed: float) -> bool:
    m = trial.user_attrs["metrics"]
    return (not trial.user_attrs["simulated"] and m["accuracy_drop"] <= 0.01
            and teacher["model_mb"] / m["model_mb"] >= size and teacher["latency_p50_ms"] / m["latency_p50_ms"] >= speed)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=SlimsearchConfig().search.n_trials)
    trials = parser.parse_args().trials
    print(f"# compression per built-in task, default search ({trials} trials, batch 64) -- {provenance()}")
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as root:
        for task in ("digits", "digits-transformer"):
            _, config = run_search(Path(root), task, task=task, n_trials=trials,
                                   enqueue=[TEACHER_INT8] if task == "digits-transformer" else None)
            study = load_existing_study(config.storage_url, config.search.study_name)
            teacher = study.user_attrs["baseline"]["metrics"]
            teacher["accuracy_drop"] = 0.0
            print(f"\n{task}: model bytes, MACs (torch-pruning counter), p50 / p95 latency ms, memory MiB; "
                  "factors are the teacher's value over the row's.\n")
            front_table(study, teacher)
            complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
            if task == "digits":
                found = [t for t in complete if shrinks(t, teacher, 3.5, 1.5)]
                best = f"#{found[0].number} {found[0].user_attrs['summary']}" if found else "none"
                goal("digits: a trial >= 3.5x smaller and >= 1.5x faster (p50) at drop <= 1 %",
                     f"{len(found)} of {len(complete)} trials (first: {best})", ">= 1", bool(found))
            else:
                int8 = next(t for t in complete if {k: t.params.get(k) for k in TEACHER_INT8} == TEACHER_INT8)
                m = int8.user_attrs["metrics"]
                size = teacher["model_mb"] / m["model_mb"]
                goal(f"digits-transformer: dynamic int8 size reduction at drop {100 * m['accuracy_drop']:+.2f} %",
                     f"{size:.2f}x ({int8.user_attrs['tags']['quant_path']})", ">= 3x at drop <= 1 %",
                     size >= 3 and m["accuracy_drop"] <= 0.01)


if __name__ == "__main__":
    main()
