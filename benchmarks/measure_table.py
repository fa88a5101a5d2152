"""Measure every candidate of a benchmark space once, with the real search driver, into a table.

The table is the yardstick of ``search_quality.py``: samplers are replayed on it, so
every hypervolume it reports comes from measurements, and a sampler's simulated
wall-clock comes from the seconds each candidate really cost (stage cache included).

    .venv/bin/python benchmarks/measure_table.py digits             # 680 candidates
    .venv/bin/python benchmarks/measure_table.py digits-transformer # 360 candidates

The study lives in ``slimsearch-out/table-<task>-<hash>``; an interrupted run resumes
where it stopped (re-run the same command). When every candidate has a trial, the table
is written to ``benchmarks/tables/<task>.csv`` with ``<task>.json`` beside it
(provenance, space, objectives, reference, wall time), both meant to be committed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.store.study import evaluated_count, load_existing_study
from slimsearch.spaces import ParallelSpec, PruneSpec, QuantizeSpec, SpaceSpec, StudentSpec, grid_params

from common import provenance, run_search

ROOT = Path(__file__).resolve().parents[1] / "slimsearch-out"
TABLES = Path(__file__).resolve().parent / "tables"

# Model bases (teacher + distilled students) x pruning ratios x bit widths x deployment
# (threads, runtime): the model/deployment split of a real search, small enough to enumerate.
_DEPLOYMENT = ParallelSpec(strategies=["single"], threads=[1, 2], runtimes=["torch", "onnxruntime"])
TABLE_SPACES = {
    "digits": SpaceSpec(
        student=StudentSpec(width=[0.25, 0.5, 0.75, 1.0], depth=[2, 3], temperature=[4.0], alpha=[0.0, 0.5]),
        prune=PruneSpec(low=0.0, high=0.6, step=0.2),
        quantize=QuantizeSpec(bits=[32, 8, 4]),
        parallel=_DEPLOYMENT,
    ),
    "digits-transformer": SpaceSpec(
        student=StudentSpec(width=[0.25, 0.5, 0.75, 1.0], depth=[2, 3], temperature=[4.0], alpha=[0.5]),
        prune=PruneSpec(low=0.0, high=0.6, step=0.2),
        quantize=QuantizeSpec(bits=[32, 8, 4]),
        parallel=_DEPLOYMENT,
    ),
}
COLUMNS = ("number", "state", "fingerprint", "summary", "params", "accuracy", "test_accuracy", "accuracy_drop",
           "latency_p50_ms", "latency_p95_ms", "latency_cv", "memory_mb", "model_mb", "params_count", "macs",
           "constraints", "seconds_trial", "seconds_distill", "seconds_prune_finetune", "seconds_quantize",
           "cache_hit_distill", "cache_hit_prune_finetune", "cache_hit_onnx", "quant_path", "simulated", "noisy",
           "failure_reason")


def study_name(task: str) -> str:
    identity = json.dumps([task, TABLE_SPACES[task].model_dump(),
                           SlimsearchConfig().model_dump(exclude={"search", "output_dir", "task"})],
                          sort_keys=True, default=str)
    return f"table-{task}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def measure(task: str) -> optuna.Study:
    """Run (or resume) the study that measures every candidate of the task's table space."""
    space, name = TABLE_SPACES[task], study_name(task)
    grid = grid_params(space)
    config = SlimsearchConfig(output_dir=str(ROOT / name))
    database = ROOT / name / "optuna.db"
    done = evaluated_count(load_existing_study(config.storage_url, name)) if database.exists() else 0
    if done < len(grid):  # a resumed study still holds its waiting enqueued candidates
        run_search(ROOT, name, task=task, space=space, enqueue=None if database.exists() else grid,
                   n_trials=len(grid) - done, sampler="random", early_stopping={"enabled": False})
    return load_existing_study(config.storage_url, name)


def row(trial: FrozenTrial) -> dict[str, object]:
    metrics, tags, attrs = trial.user_attrs.get("metrics", {}), trial.user_attrs.get("tags", {}), trial.user_attrs
    return {
        "number": trial.number, "state": trial.state.name, "fingerprint": _fingerprint(trial),
        "summary": attrs.get("summary", ""), "params": json.dumps(trial.params, sort_keys=True),
        "accuracy": metrics.get("accuracy"), "test_accuracy": metrics.get("test_accuracy"),
        "accuracy_drop": metrics.get("accuracy_drop"), "latency_p50_ms": metrics.get("latency_p50_ms"),
        "latency_p95_ms": metrics.get("latency_p95_ms"), "latency_cv": metrics.get("latency_cv"),
        "memory_mb": metrics.get("memory_mb"), "model_mb": metrics.get("model_mb"),
        "params_count": metrics.get("params"), "macs": metrics.get("macs"),
        "constraints": json.dumps(trial.system_attrs.get("constraints")),
        "seconds_trial": metrics.get("seconds_trial"), "seconds_distill": metrics.get("seconds_distill"),
        "seconds_prune_finetune": metrics.get("seconds_prune_finetune"),
        "seconds_quantize": metrics.get("seconds_quantize"),
        "cache_hit_distill": tags.get("cache_hit.distill"), "cache_hit_prune_finetune": tags.get("cache_hit.prune_finetune"),
        "cache_hit_onnx": tags.get("cache_hit.onnx"), "quant_path": tags.get("quant_path"),
        "simulated": tags.get("simulated"), "noisy": tags.get("noisy"), "failure_reason": attrs.get("failure_reason"),
    }


def _fingerprint(trial: FrozenTrial) -> str:
    from slimsearch.spaces import Candidate

    candidate = trial.user_attrs.get("candidate")
    return Candidate.from_dict(candidate).fingerprint() if candidate else ""


def write_table(task: str, study: optuna.Study) -> Path:
    trials = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    TABLES.mkdir(exist_ok=True)
    path = TABLES / f"{task}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row(t) for t in trials)
    started = min(t.datetime_start for t in trials if t.datetime_start)
    finished = max(t.datetime_complete for t in trials if t.datetime_complete)
    meta = {
        "task": task, "study": study.study_name, "measured": provenance(),
        "first_trial_started": started.isoformat(), "last_trial_finished": finished.isoformat(),
        "measuring_hours": round((finished - started).total_seconds() / 3600, 3),
        "sum_seconds_trial": round(sum(t.user_attrs.get("metrics", {}).get("seconds_trial", 0.0) for t in trials), 1),
        "candidates": len(grid_params(TABLE_SPACES[task])), "rows": len(trials),
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "objectives": study.user_attrs["objectives"], "directions": [d.name.lower() for d in study.directions],
        "reference_point": study.user_attrs["reference_point"], "baseline": study.user_attrs["baseline"],
        "constraints": SlimsearchConfig().constraints, "space": TABLE_SPACES[task].model_dump(),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=sorted(TABLE_SPACES))
    task = parser.parse_args().task
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = write_table(task, measure(task))
    print(f"table written: {path} ({path.with_suffix('.json').name} beside it)")


if __name__ == "__main__":
    main()
