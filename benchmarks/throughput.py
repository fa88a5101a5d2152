"""Orchestration overhead, scaling and in-search latency integrity, on equal work.

Every run gets the same candidates (drawn once from the default digits space and
enqueued, early stopping off), once per backend/storage at 1 and 2 workers, each in its
own output directory. Its loop wall time splits into the trials' own work (build +
measure: the ``seconds_trial`` each trial records) and everything else: sampler,
storage, MLflow, front updates, process start-up and, for Ray, scheduling and result
transport. Judged by

* the overhead share: worker-seconds of the loop not spent inside trials (goal <= 5 %),
* trials/hour at 2 workers over 1 worker (optuna + sqlite; goal >= 1.7x), and
* Spearman rho between the p50 latencies measured inside the 2-worker search and the
  same artifacts re-built (cache hits) and re-measured alone afterwards (goal >= 0.95).

PostgreSQL is included when ``SLIMSEARCH_BENCH_POSTGRES`` holds a server URL ending in
``/`` (database ``optuna`` must exist).

    .venv/bin/python benchmarks/throughput.py [--trials 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from optuna.trial import TrialState
from scipy.stats import spearmanr

from slimsearch.pipelines import CompressionPipeline, load_task
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop.recording import RunSummary
from slimsearch.search.store.study import load_existing_study
from slimsearch.spaces import Candidate, SpaceSpec, sample_trials

from common import goal, provenance, run_search, serve

SCALING_SETUP = "optuna + sqlite"


def setups(root: Path) -> dict[str, dict[str, object]]:
    found: dict[str, dict[str, object]] = {
        SCALING_SETUP: {},
        "optuna + journal": {"storage": f"journal:///{root / 'journal' / 'optuna.log'}"},
        "ray + sqlite": {"backend": "ray"},
    }
    if url := os.environ.get("SLIMSEARCH_BENCH_POSTGRES"):
        found["optuna + postgresql"] = {"storage": url + "optuna"}
    return found


def trial_work(config: SlimsearchConfig, summary: RunSummary) -> float:
    study = load_existing_study(config.storage_url, config.search.study_name)
    return sum(t.user_attrs["metrics"]["seconds_trial"] for t in study.trials
               if t.state == TrialState.COMPLETE and t.number >= (summary.first_trial or 0))


def isolated_rho(config: SlimsearchConfig) -> tuple[float, int]:
    """Re-build each completed trial's candidate from the run's stage cache and measure it
    alone; Spearman rho against the p50 the trial recorded during the search."""
    study = load_existing_study(config.storage_url, config.search.study_name)
    task = load_task(config.task, config.search.seed)
    pipeline = CompressionPipeline(task, config.cache_dir, config.training.recipe(), config.search.seed)
    in_search, alone = [], []
    for trial in study.trials:
        if trial.state != TrialState.COMPLETE:
            continue
        candidate = Candidate.from_dict(trial.user_attrs["candidate"])
        if candidate.strategy != "single":
            continue
        in_search.append(trial.user_attrs["metrics"]["latency_p50_ms"])
        alone.append(serve(pipeline.build(candidate).serving, task, threads=candidate.threads).latency.p50_ms)
    return float(spearmanr(in_search, alone).statistic), len(in_search)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    trials = parser.parse_args().trials
    work = [params for _, params in sample_trials(SpaceSpec(), trials, seed=0)]
    print(f"# orchestration overhead and scaling, digits search, the same {trials} candidates per run -- "
          f"{provenance()}")
    print("| backend + storage | workers | loop wall s | trial work s | overhead s/trial | overhead share | "
          "trials/hour |")
    print("|---|---|---|---|---|---|---|")
    rates: dict[tuple[str, int], float] = {}
    shares: list[float] = []
    with tempfile.TemporaryDirectory(prefix="slimsearch-bench-") as root:
        for index, (name, search) in enumerate(setups(Path(root)).items()):
            for workers in (1, 2):
                summary, config = run_search(Path(root), f"throughput-{index}-{workers}", enqueue=work,
                                             n_trials=trials, workers=workers, early_stopping={"enabled": False},
                                             **search)
                worked = trial_work(config, summary)
                overhead = workers * summary.seconds - worked  # worker-seconds spent outside trials
                share = overhead / (workers * summary.seconds)
                shares.append(share)
                rates[name, workers] = 3600 * summary.evaluated / summary.seconds
                print(f"| {name} | {workers} | {summary.seconds:.1f} | {worked:.1f} | "
                      f"{overhead / max(summary.evaluated, 1):.2f} | {100 * share:.1f} % | "
                      f"{rates[name, workers]:.0f} |")
                if (name, workers) == (SCALING_SETUP, 2):
                    rho, measured = isolated_rho(config)
    print("Overhead = worker-seconds of the loop not spent inside trials (workers x wall - trial work); "
          "a trial's work includes waiting for the host's timing lock, worker start-up does not.")
    goal("orchestration overhead, worst backend/storage/workers", f"{100 * max(shares):.1f} %", "<= 5 %",
         max(shares) <= 0.05)
    scaling = rates[SCALING_SETUP, 2] / rates[SCALING_SETUP, 1]
    goal(f"2 workers vs 1, trials/hour ({SCALING_SETUP})", f"{scaling:.2f}x", ">= 1.7x", scaling >= 1.7)
    goal(f"in-search vs isolated p50, Spearman rho over {measured} trials of the 2-worker run", f"{rho:.3f}",
         ">= 0.95", rho >= 0.95)


if __name__ == "__main__":
    main()
