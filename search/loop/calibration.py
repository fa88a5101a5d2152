"""Deployment calibration: the teacher and the space's smallest model timed at every
deployment before a study's first trial, so the cost predictor knows each deployment.

The predictor prices a candidate by its model's structure and its deployment (runtime,
served bit width, threads). After 20 random trials of the digits table most of its 8
deployments had been measured one to three times, and the error came from borrowing
across them: 27.9 % on a deployment not yet measured, 9.2 % on one measured four times or
more, 12.0 % in all (issue 31's goal: 10 %). Two models per deployment -- the teacher,
the largest the space builds, and its smallest architecture, pruned as far as the space
goes -- give every deployment its fixed overhead and its cost per unit of work before
trial 1: replayed on the committed tables, 12.0 -> 8.2 % on digits and 9.6 -> 7.2 % on
digits-transformer (``benchmarks/search_quality.py``). The teacher at the baseline's own
deployment is the baseline, not measured again.

The smallest model is built untrained (``CompressionPipeline.build_untrained``): speed and
memory follow its shapes and kernels, not its weights, and it costs a conversion and a
probe. These are measurements, not trials: none is on the front, in the budget or shown
as a candidate. They are stored with the study as they are taken, so a resumed or
interrupted study takes only the missing ones, and logged on the study's parent run
(``calibration/deployments.json``). A reading the host disturbed (``noisy``) is dropped
and taken by the next run; a deployment that cannot serve the model is stored as left out,
with its reason: the trials teach the predictor that deployment anyway.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import optuna

from slimsearch.evaluators import Placement, save_artifact
from slimsearch.pipelines import CompressionPipeline
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.loop.cost_model import served_bits
from slimsearch.search.loop.trial import REFERENCE_WORKLOAD_KEY, Yardstick, latency_metrics, time_serving
from slimsearch.search.objectives import MACS, MEMORY_MB, PARAMS
from slimsearch.search.store import records
from slimsearch.spaces import DEFAULT_RUNTIME, Candidate, SpaceSpec, StudentChoice, rejection_reason
from slimsearch.spaces.sampling import runtime_choices

Reading = dict[str, Any]
"""One calibration probe as stored: ``candidate`` (dict), ``metrics`` or ``left_out``, and
the reference workload its latency is calibrated against."""


def calibration_candidates(space: SpaceSpec, threads_default: int) -> list[Candidate]:
    """The teacher and the space's smallest model at every single-process deployment the
    space serves for real (bit widths of 8 and up: fake-quant serves fp32 kernels).
    ``threads_default`` is the baseline's thread count (its deployment comes first)."""
    if "single" not in space.parallel.strategies:
        return []
    deployments = [(runtime, bits, dtype, threads)
                   for bits in sorted({b for b in space.quantize.bits if b >= 8}, reverse=True)
                   for dtype in (space.quantize.float16_dtypes if bits == 16 else [None])
                   for runtime in (runtime_choices(space, bits) or ("", [DEFAULT_RUNTIME]))[1]
                   for threads in sorted(space.parallel.threads, key=lambda t: t != threads_default)]
    models = [(None, 0.0, 0.0), _smallest(space)]  # (student, prune ratio, rank ratio): the teacher first
    return [Candidate(student, prune, bits, dtype, "single", 1, threads, runtime=runtime, rank_ratio=rank)
            for student, prune, rank in dict.fromkeys(models)
            for runtime, bits, dtype, threads in deployments]


def _smallest(space: SpaceSpec) -> tuple[StudentChoice | None, float, float]:
    """The least work the space builds: its narrowest, shallowest student (or the teacher),
    pruned and factorised as far as the space goes. Training settings do not change speed."""
    s = space.student
    student = (StudentChoice(min(s.width), min(s.depth), s.temperature[0], s.alpha[0],
                             init="scratch" if "scratch" in s.init else "teacher") if s.distill else None)
    ranks = [r for r in space.lowrank.ratios if r > 0]
    return student, round(space.prune.high, 6), min(ranks, default=0.0)


def deployment_calibration(study: optuna.Study, config: SlimsearchConfig, pipeline: CompressionPipeline,
                           placement: Placement, workdir: Path, yardstick: Yardstick, baseline: dict[str, Any],
                           measure: bool, say: Callable[[str], None]) -> tuple[list[Reading], list[Reading]]:
    """The study's calibration readings, the baseline first (none if the study was never
    calibrated), and those taken now: the missing ones are measured first when ``measure``
    (the study's owner, on a run that calibrates). Readings taken against another
    reference workload than the baseline's are on another scale: dropped, and taken again."""
    workload = baseline.get(REFERENCE_WORKLOAD_KEY)
    stored: list[Reading] = [r for r in study.user_attrs.get(records.STUDY_CALIBRATION, [])
                             if r.get(REFERENCE_WORKLOAD_KEY) == workload]
    taken_now: list[Reading] = []
    if measure:
        taken = {Candidate.from_dict(r["candidate"]).fingerprint() for r in stored}
        taken.add(Candidate.from_dict(baseline["candidate"]).fingerprint())
        missing = [c for c in calibration_candidates(config.space, max(config.space.parallel.threads))
                   if c.fingerprint() not in taken]
        for number, candidate in enumerate(missing, 1):
            say(f"calibrating deployments for the cost predictor ({number}/{len(missing)}: {_deployment(candidate)})")
            if (reading := _reading(candidate, config, pipeline, placement, workdir, yardstick)) is not None:
                taken_now.append({**reading, REFERENCE_WORKLOAD_KEY: workload})
                study.set_user_attr(records.STUDY_CALIBRATION, stored + taken_now)  # an interrupted run keeps them
    readings = stored + taken_now
    return ([{"candidate": baseline["candidate"], "metrics": baseline["metrics"]}, *readings] if readings else [],
            taken_now)


def _reading(candidate: Candidate, config: SlimsearchConfig, pipeline: CompressionPipeline, placement: Placement,
             workdir: Path, yardstick: Yardstick) -> Reading | None:
    """``candidate`` built untrained and timed as a trial would be; why not, if it cannot be;
    ``None`` if the host was too busy (the next run tries again)."""
    reading: Reading = {"candidate": candidate.to_dict()}
    if problem := rejection_reason(candidate, config.evaluation.batch_size) or pipeline.rejection(candidate):
        return {**reading, "left_out": problem}
    started = time.perf_counter()
    example = pipeline.task.serving_batch(config.evaluation.batch_size)
    workdir.mkdir(parents=True, exist_ok=True)
    artifact: Path | None = None
    try:
        built = pipeline.build_untrained(candidate)
        artifact = save_artifact(candidate.runtime, built.serving, example, workdir / f"calibration-{candidate.fingerprint()}")
        serving = time_serving(candidate, built, artifact, example, config.evaluation, placement, yardstick)
    except Exception as exc:  # noqa: BLE001 - a deployment that cannot serve this model is left out, not fatal
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return {**reading, "left_out": f"{type(exc).__name__}: {first}"}
    finally:
        if artifact is not None:
            artifact.unlink(missing_ok=True)
    if serving.noisy:
        return None
    metrics = {**latency_metrics(serving), MEMORY_MB: serving.memory_mb, MACS: float(built.macs),
               PARAMS: float(built.params), "seconds": time.perf_counter() - started}
    return {**reading, "metrics": metrics}


def calibration_summary(taken: list[Reading]) -> str:
    """One line on readings just taken: how many, how long, what was left out and why."""
    timed = [r for r in taken if "metrics" in r]
    left_out = [r["left_out"] for r in taken if "left_out" in r]
    seconds = sum(r["metrics"].get("seconds", 0.0) for r in timed)
    line = (f"deployment calibration: {len(timed)} models timed in {seconds:.0f} s (the teacher and the smallest "
            "model at each deployment): the cost predictor starts knowing every deployment")
    return line + (f"; {len(left_out)} left out ({left_out[0]})" if left_out else "")


def _deployment(candidate: Candidate) -> str:
    model = "teacher" if candidate.student is None and not candidate.prune_ratio else "smallest model"
    precision = candidate.float_dtype or f"{served_bits(candidate)}-bit"
    return f"{model}, {candidate.runtime} {precision}, {candidate.threads} thread{'s' * (candidate.threads > 1)}"
