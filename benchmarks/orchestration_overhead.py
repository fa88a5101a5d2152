"""What does orchestration cost per trial? Each backend and storage on the same digits search.

Runs the embedded digits search (random sampler, early stopping off, same seed and
budget) once per backend/storage and splits its loop wall time into the trials' own work
(build + measure: the ``seconds_trial`` each trial records) and everything else: sampler,
storage writes, MLflow logging, front updates, and for Ray the scheduling and result
transport. Judged by the overhead share of the loop (goal <= 5 %). PostgreSQL is included
when ``SLIMSEARCH_BENCH_POSTGRES`` holds a server URL ending in ``/`` (databases
``optuna`` and ``mlflow`` must exist).

    .venv/bin/python benchmarks/orchestration_overhead.py [--trials 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from optuna.trial import TrialState

from slimsearch.search.study import load_existing_study

from common import provenance, run_search


def setups(root: Path) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {
        "optuna + sqlite": {},
        "optuna + journal": {"storage": f"journal:///{root / 'journal' / 'optuna.log'}"},
        "ray + sqlite": {"backend": "ray"},
    }
    if url := os.environ.get("SLIMSEARCH_BENCH_POSTGRES"):
        found["optuna + postgresql"] = {"storage": url + "optuna"}
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    trials = parser.parse_args().trials
    print(f"# orchestration overhead per trial, digits search, {trials} trials each -- {provenance()}")
    print("| backend + storage | loop wall s | trial work s | overhead s/trial | overhead share | goal <= 5 % |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as root:
        for index, (name, search) in enumerate(setups(Path(root)).items()):
            summary, config = run_search(Path(root), f"overhead-{index}", n_trials=trials, sampler="random",
                                         early_stopping={"enabled": False}, **search)
            study = load_existing_study(config.storage_url, config.search.study_name)
            work = sum(t.user_attrs["metrics"]["seconds_trial"] for t in study.trials
                       if t.state == TrialState.COMPLETE and t.number >= (summary.first_trial or 0))
            overhead = summary.seconds - work
            share = overhead / summary.seconds
            print(f"| {name} | {summary.seconds:.1f} | {work:.1f} | {overhead / max(summary.evaluated, 1):.2f} | "
                  f"{100 * share:.1f} % | {'met' if share <= 0.05 else 'NOT met'} |")


if __name__ == "__main__":
    main()
