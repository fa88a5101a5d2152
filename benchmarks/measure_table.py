"""Measure every candidate of a benchmark space once, with the real search driver, into a table.

The table is the yardstick of ``search_quality.py``: samplers are replayed on it, so
every hypervolume it reports comes from measurements, and a sampler's simulated
wall-clock comes from the seconds each candidate really cost (stage cache included).

    .venv/bin/python benchmarks/measure_table.py digits             # 680 candidates
    .venv/bin/python benchmarks/measure_table.py digits-transformer # 360 candidates
    .venv/bin/python benchmarks/measure_table.py digits --remeasure-noisy  # on an idle host
    .venv/bin/python benchmarks/measure_table.py digits --remeasure-all    # after a protocol change
    .venv/bin/python benchmarks/measure_table.py digits --retest 60        # the noise floor

A row whose latency reading was flagged noisy (other load on the host while it was
measured) is a wrong cost for a replay and for the cost predictor; ``--remeasure-noisy``
measures those candidates again (``search.remeasure``, same study, built stages from its
cache) and the table then takes the readings of each candidate's latest measurement and
the build seconds of its first.

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
import random
import statistics
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop.predictor import PREDICTED
from slimsearch.search.store import records
from slimsearch.search.store.study import evaluated_count, load_existing_study
from slimsearch.spaces import Candidate, ParallelSpec, PruneSpec, QuantizeSpec, SpaceSpec, StudentSpec, grid_params

from common import provenance, run_search

RETEST = "retest"
"""User attribute of a second measurement taken to measure the noise floor, not a row."""
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
           "failure_reason", "remeasured")


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


def remeasure(task: str, matching: str | None) -> optuna.Study:
    """Measure again every candidate of the task's table whose latest reading is noisy --
    or, with ``matching``, every measured one whose summary contains it ("" for all: after
    the measurement protocol changed; the driver then takes the study's baseline again if
    its reference workload changed)."""
    study = table_study(task)
    chosen = [t.params for t in latest_measurements(study).values() if t.state == TrialState.COMPLETE
              and (_noisy(t) if matching is None else matching in t.user_attrs.get("summary", ""))]
    return _measure_again(task, study, chosen, {})


def retest(task: str, count: int, seed: int = 0) -> optuna.Study:
    """Measure ``count`` random clean candidates of the table a second time (tagged
    ``retest``, kept out of the table's rows): how far two idle measurements of one
    candidate lie apart is the floor under any cost predictor's error."""
    study = table_study(task)
    clean = sorted((t for t in latest_measurements(study).values()
                    if t.state == TrialState.COMPLETE and not _noisy(t)),
                   key=lambda t: t.number)
    chosen = random.Random(seed).sample(clean, min(count, len(clean)))
    return _measure_again(task, study, [t.params for t in chosen], {RETEST: True})


def table_study(task: str) -> optuna.Study:
    """The study the committed table of ``task`` was written from."""
    name = json.loads((TABLES / f"{task}.json").read_text())["study"]
    return load_existing_study(SlimsearchConfig(output_dir=str(ROOT / name)).storage_url, name)


def _measure_again(task: str, study: optuna.Study, params: list[dict[str, object]],
                   attrs: dict[str, object]) -> optuna.Study:
    """Measure ``params`` again -- or, when an interrupted command left enqueued trials
    waiting, finish those first (re-run the command for the rest)."""
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if waiting or params:
        run_search(ROOT, study.study_name, task=task, space=TABLE_SPACES[task], enqueue=None if waiting else params,
                   enqueue_attrs=attrs, n_trials=waiting or len(params), sampler="random", remeasure=True,
                   early_stopping={"enabled": False})
    return table_study(task)


def latest_measurements(study: optuna.Study) -> dict[str, FrozenTrial]:
    """Each candidate's latest complete-or-failed trial, by fingerprint (retests aside)."""
    latest: dict[str, FrozenTrial] = {}
    for trial in _measurements(study):
        latest[_fingerprint(trial)] = trial
    return latest


def _measurements(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that measured (or failed to build) a candidate: not retests, and not enqueued
    trials failed before they ran (no candidate recorded)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if not t.user_attrs.get(RETEST) and records.CANDIDATE in t.user_attrs]


def row(trial: FrozenTrial, first: FrozenTrial) -> dict[str, object]:
    """A candidate's table row: readings from ``trial`` (its latest measurement), build
    seconds and cache hits from ``first`` (what building it cost when the table first did)."""
    metrics, tags, attrs = trial.user_attrs.get("metrics", {}), trial.user_attrs.get("tags", {}), trial.user_attrs
    built, built_tags = first.user_attrs.get("metrics", {}), first.user_attrs.get("tags", {})
    return {
        "number": trial.number, "state": trial.state.name, "fingerprint": _fingerprint(trial),
        "summary": attrs.get("summary", ""), "params": json.dumps(trial.params, sort_keys=True),
        "accuracy": metrics.get("accuracy"), "test_accuracy": metrics.get("test_accuracy"),
        "accuracy_drop": metrics.get("accuracy_drop"), "latency_p50_ms": metrics.get("latency_p50_ms"),
        "latency_p95_ms": metrics.get("latency_p95_ms"), "latency_cv": metrics.get("latency_cv"),
        "memory_mb": metrics.get("memory_mb"), "model_mb": metrics.get("model_mb"),
        "params_count": metrics.get("params"), "macs": metrics.get("macs"),
        "constraints": json.dumps(trial.constraints),
        "seconds_trial": built.get("seconds_trial"), "seconds_distill": built.get("seconds_distill"),
        "seconds_prune_finetune": built.get("seconds_prune_finetune"),
        "seconds_quantize": built.get("seconds_quantize"),
        "cache_hit_distill": built_tags.get("cache_hit.distill"),
        "cache_hit_prune_finetune": built_tags.get("cache_hit.prune_finetune"),
        "cache_hit_onnx": built_tags.get("cache_hit.onnx"), "quant_path": tags.get("quant_path"),
        "simulated": tags.get("simulated"), "noisy": tags.get("noisy"), "failure_reason": attrs.get("failure_reason"),
        "remeasured": "true" if trial.number != first.number else "false",
    }


def _noisy(trial: FrozenTrial) -> bool:
    """Whether the trial's latency reading was flagged as disturbed by other load."""
    return trial.user_attrs.get(records.TAGS, {}).get("noisy") == "true"


def _fingerprint(trial: FrozenTrial) -> str:
    return Candidate.from_dict(trial.user_attrs[records.CANDIDATE]).fingerprint()


def write_table(task: str, study: optuna.Study, provenance_note: dict[str, str]) -> Path:
    """The table's CSV and JSON; ``provenance_note`` names this command's run (measured,
    remeasured_in, retest_in), the other provenance keys stay as the JSON had them if it
    describes the same study (the same first trial): a table measured afresh in a new
    study folder must not inherit an earlier study's re-measurement or retest."""
    latest = latest_measurements(study)
    first: dict[str, FrozenTrial] = {}
    for trial in _measurements(study):
        first.setdefault(_fingerprint(trial), trial)
    TABLES.mkdir(exist_ok=True)
    path = TABLES / f"{task}.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row(latest[key], first[key]) for key in sorted(first, key=lambda k: first[k].number))
    firsts, again = list(first.values()), [t for key, t in latest.items() if t.number != first[key].number]
    started = min(t.datetime_start for t in firsts if t.datetime_start)
    finished = max(t.datetime_complete for t in firsts if t.datetime_complete)
    previous = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
    same_study = previous.get("study") == study.study_name and previous.get("first_trial_started") == started.isoformat()
    carried = {key: previous.get(key) if same_study else None for key in ("measured", "remeasured_in", "retest_in")}
    meta = carried | provenance_note | {
        "task": task, "study": study.study_name,
        "first_trial_started": started.isoformat(), "last_trial_finished": finished.isoformat(),
        "measuring_hours": round((finished - started).total_seconds() / 3600, 3),
        "sum_seconds_trial": round(sum(t.user_attrs.get("metrics", {}).get("seconds_trial", 0.0) for t in firsts), 1),
        "candidates": len(grid_params(TABLE_SPACES[task])), "rows": len(latest),
        "complete": sum(t.state == TrialState.COMPLETE for t in latest.values()),
        "noisy": sum(map(_noisy, latest.values())),
        "remeasured": len(again),
        "remeasured_between": _span(again),
        "retest": _retest_summary(study, latest),
        "objectives": study.user_attrs["objectives"], "directions": [d.name.lower() for d in study.directions],
        "reference_point": study.user_attrs["reference_point"], "baseline": study.user_attrs["baseline"],
        "constraints": SlimsearchConfig().constraints, "space": TABLE_SPACES[task].model_dump(),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return path


def _span(trials: list[FrozenTrial]) -> list[str] | None:
    return [min(t.datetime_start for t in trials).isoformat(),
            max(t.datetime_complete for t in trials).isoformat()] if trials else None


def _retest_summary(study: optuna.Study, latest: dict[str, FrozenTrial]) -> dict[str, object] | None:
    """Second measurements of clean rows: per pair (fingerprint, row's reading, retest's
    reading) of each predicted cost, and the MAPE of the retest against the row."""
    retests = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get(RETEST)]
    if not retests:
        return None
    pairs = {name: [(fp, latest[fp].user_attrs["metrics"][name], t.user_attrs["metrics"][name])
                    for t in retests if (fp := _fingerprint(t)) in latest] for name in PREDICTED}
    return {"candidates": len(retests), "measured_between": _span(retests),
            "noisy": sum(map(_noisy, retests)),
            **{f"{name}_mape": round(100 * statistics.mean(abs(b - a) / a for _, a, b in values), 2)
               for name, values in pairs.items()},
            "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=sorted(TABLE_SPACES))
    parser.add_argument("--remeasure-noisy", action="store_true", help="measure the table's noisy rows again")
    parser.add_argument("--remeasure-all", action="store_const", const="", dest="remeasure_matching",
                        help="measure every complete row again (the measurement protocol changed)")
    parser.add_argument("--remeasure-matching", metavar="TEXT",
                        help="measure again every complete row whose summary contains TEXT (e.g. 't2 | onnxruntime')")
    parser.add_argument("--retest", type=int, default=0, metavar="N",
                        help="measure N random clean rows a second time (the noise floor of a cost prediction)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.retest:
        path = write_table(args.task, retest(args.task, args.retest), {"retest_in": provenance()})
    elif args.remeasure_noisy or args.remeasure_matching is not None:
        path = write_table(args.task, remeasure(args.task, args.remeasure_matching), {"remeasured_in": provenance()})
    else:
        path = write_table(args.task, measure(args.task), {"measured": provenance()})
    print(f"table written: {path} ({path.with_suffix('.json').name} beside it)")


if __name__ == "__main__":
    main()
