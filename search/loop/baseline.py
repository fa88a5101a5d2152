"""The study's baseline: the teacher served alone, measured once per study.

It is every trial's yardstick -- the quality drop, the "vs teacher" ratios, the
hypervolume's reference point and paired timing's calibrated reference latency (one per
thread count the space serves, timed in the teacher's window) all come from it -- so it
is never taken on a busy host (measured again while the host is busy), never mixed
across hardware (a study resumed on another CPU is refused), and taken again when a
study is resumed by a slimsearch whose reference workload differs from the one it was
calibrated against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from slimsearch.evaluators import MeasurementError, Placement, hardware_identity
from slimsearch.evaluators.paired_timing import REFERENCE_WORKLOAD
from slimsearch.pipelines import CompressionPipeline
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop.errors import SearchError
from slimsearch.search.loop.recording import MAX_DEFERRALS
from slimsearch.search.loop.trial import REFERENCE_WORKLOAD_KEY, TrialResult, Yardstick, busy_host, measure_candidate
from slimsearch.search.store import records
from slimsearch.search.store.pareto import reference_point
from slimsearch.search.store.study import stored_baseline
from slimsearch.spaces import Candidate


def study_baseline(study: optuna.Study, config: SlimsearchConfig, pipeline: CompressionPipeline, placement: Placement,
                   workdir: Path, console: Console, worker: int) -> dict[str, Any]:
    """The teacher's measurement, taken once per study (by its owner) and reused on resume."""
    stored = stored_baseline(study)
    hardware = hardware_identity()
    if stored is None and worker:
        raise SearchError(f"study '{study.study_name}' has no baseline yet; start it with slimsearch run")
    if stored is not None:
        if stored["hardware"].get("cpu") != hardware["cpu"]:
            raise SearchError(
                f"study '{study.study_name}' was measured on '{stored['hardware'].get('cpu')}', "
                f"this host is '{hardware['cpu']}'; use a new search.study_name for this hardware"
            )
        if stored.get(REFERENCE_WORKLOAD_KEY) == REFERENCE_WORKLOAD or worker:
            return stored  # a worker with a stale one is refused by its Yardstick: the owner re-takes it
        console.print(f"the study's baseline was calibrated against an earlier reference workload "
                      f"({stored.get(REFERENCE_WORKLOAD_KEY, 'unnamed')}); measuring the teacher again against "
                      f"'{REFERENCE_WORKLOAD}' (earlier trials keep their readings, the earlier baseline is kept "
                      f"in the study's '{records.STUDY_SUPERSEDED_BASELINES}')")
    teacher = Candidate(None, 0.0, 32, None, "single", 1, max(config.space.parallel.threads))
    result = _measure_teacher(teacher, config, pipeline, placement, workdir, console)
    baseline = {"metrics": result.metrics, "hardware": result.hardware, "candidate": teacher.to_dict(),
                REFERENCE_WORKLOAD_KEY: REFERENCE_WORKLOAD}
    if stored is None:
        study.set_user_attr(records.STUDY_REFERENCE_POINT, reference_point(config.objectives, result.metrics))
    else:  # the hypervolume's box stays: the front's history is measured in it
        superseded = study.user_attrs.get(records.STUDY_SUPERSEDED_BASELINES, [])
        study.set_user_attr(records.STUDY_SUPERSEDED_BASELINES, [*superseded, stored])
    study.set_user_attr(records.STUDY_BASELINE, baseline)
    return baseline


def baseline_param_prefix(study: optuna.Study) -> str:
    """The MLflow parent-run params' prefix of the study's current baseline: params cannot
    change once logged, so a baseline taken again is logged under a prefix of its own."""
    taken_again = len(study.user_attrs.get(records.STUDY_SUPERSEDED_BASELINES, []))
    return f"baseline.retaken{taken_again}." if taken_again else "baseline."


def _measure_teacher(teacher: Candidate, config: SlimsearchConfig, pipeline: CompressionPipeline,
                     placement: Placement, workdir: Path, console: Console) -> TrialResult:
    for attempt in range(1, MAX_DEFERRALS + 2):
        try:
            result = measure_candidate(teacher, pipeline, config.evaluation, placement, workdir,
                                       Yardstick(calibrate_threads=tuple(sorted(set(config.space.parallel.threads)))))
        except MeasurementError as exc:  # the probe (timed out, or crashed), not the model
            raise SearchError(f"the teacher's serving measurement failed ({exc}); raise evaluation.timeout_s if "
                              "the teacher is that slow here, then run the same command again") from exc
        except Exception as exc:  # every trial would fail the same way: stop before the first one
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise SearchError(f"the teacher itself cannot be served and measured ({type(exc).__name__}: {first}); "
                              "it must be traceable by torch.jit.trace on the task's inputs") from exc
        if result.artifact:
            result.artifact.unlink()
        if result.tags["noisy"] != "true":
            return result
        console.print(f"the teacher's baseline was timed on a busy host ({busy_host(result.metrics)}); "
                      f"attempt {attempt} not used")
    raise SearchError(f"the host stayed busy while the teacher's baseline was timed ({busy_host(result.metrics)}); "
                      "every trial is measured against it: run when the host is quieter, or raise "
                      "evaluation.max_outside_load")
