"""One trial's work: build the candidate's model and measure it (no storage side effects).

:func:`run_candidate` turns everything that can happen to a trial into a picklable
:class:`TrialOutcome` (complete, stopped early, rejected, failed) that the study driver
records, whether the trial ran in the driver's process or in a Ray Tune actor. A fault of
the machine rather than of the candidate (a full disk) is its own kind, ``host``: the
driver stops there instead of failing every later trial the same way.
"""

from __future__ import annotations

import errno
import math
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from slimsearch.evaluators import (
    LocalPlacement,
    Placement,
    RayPlacement,
    ServingRequest,
    plan_ranks,
    save_artifact,
    serving_runtime,
)
from slimsearch.evaluators.paired_timing import REFERENCE_WORKLOAD
from slimsearch.evaluators.serving import MB, ServingMeasurement
from slimsearch.pipelines import AccuracyMonitor, BuiltModel, CompressionPipeline, Task
from slimsearch.search.config import EvaluationSettings
from slimsearch.search.objectives import (
    HOST_SLOWDOWN,
    LATENCY_CV,
    LATENCY_MEAN_MS,
    LATENCY_P50_CI_HIGH_MS,
    LATENCY_P50_CI_LOW_MS,
    LATENCY_P50_MS,
    LATENCY_P95_CI_HIGH_MS,
    LATENCY_P95_CI_LOW_MS,
    LATENCY_P95_MS,
    LATENCY_P99_MS,
    LATENCY_RAW_P50_MS,
    LATENCY_RAW_P95_MS,
    LATENCY_REFERENCE_MS,
    latency_reference_key,
    latency_references,
    LATENCY_ROUNDS_CLEAN,
    LATENCY_ROUNDS_TOTAL,
    LOCK_WAIT_S,
    MACS,
    MEMORY_MB,
    MEMORY_SPREAD_MB,
    MODEL_MB,
    OUTSIDE_LOAD_MAX,
    PARALLEL_OUTPUT_ERROR,
    PARAMS,
    SERVING_FIRST_CALL_S,
    VAL_ROWS,
    QualityMetric,
)
from slimsearch.search.loop.early_stopping import SERVING_POINT, TrialMonitor, TrialStopped
from slimsearch.search.loop.errors import SearchError
from slimsearch.spaces import Candidate, InvalidCandidate


REFERENCE_WORKLOAD_KEY = "reference_workload"
"""The baseline's key naming the reference workload its calibration was taken against."""


@dataclass(frozen=True)
class Yardstick:
    """What a trial is judged against, from the study's baseline: the teacher's quality
    (every ``_drop``) and the reference latency per thread count (paired timing's
    calibration). The baseline's own measurement has neither and instead asks the probe
    to calibrate the reference at ``calibrate_threads``."""

    teacher_quality: float | None = None
    reference_ms: dict[int, float] = field(default_factory=dict)
    calibrate_threads: tuple[int, ...] = ()

    @classmethod
    def of(cls, baseline: dict[str, Any], quality_name: str) -> Yardstick:
        """The yardstick of a stored baseline; one calibrated against another reference
        workload than this slimsearch's is refused (it would scale every reading wrongly)."""
        metrics = baseline["metrics"]
        reference = latency_references(metrics)
        calibrated_against = baseline.get(REFERENCE_WORKLOAD_KEY)
        if (reference or LATENCY_REFERENCE_MS in metrics) and calibrated_against != REFERENCE_WORKLOAD:
            earlier = f"'{calibrated_against}'" if calibrated_against else "of an earlier slimsearch"
            raise SearchError(
                f"the study's baseline was calibrated against the reference workload {earlier} and this slimsearch "
                f"times against '{REFERENCE_WORKLOAD}': resume the study once (slimsearch run --n-trials 1), which "
                "measures the teacher again, then repeat this command")
        return cls(metrics.get(quality_name), reference)

    def reference_for(self, threads: int) -> float | None:
        """The calibrated reference for a candidate on ``threads`` threads (None: the
        measurement's own window is its yardstick)."""
        return self.reference_ms.get(threads)


@dataclass
class TrialResult:
    metrics: dict[str, float]
    tags: dict[str, str] = field(default_factory=dict)
    hardware: dict[str, str] = field(default_factory=dict)
    artifact: Path | None = None
    """The measured TorchScript file; the caller keeps (front members) or deletes it."""


UNCOUNTED = ("rejected", "deferred")
"""How the driver records trials that do not count as evaluated (no budget, no front refresh)."""

_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class TrialOutcome:
    kind: Literal["complete", "pruned", "rejected", "failed", "host"]
    result: TrialResult | None = None
    curve: dict[str, float] = field(default_factory=dict)
    """Validation accuracy reported while training (and at serving), for early stopping."""
    reason: str = ""
    rule: str = ""
    """The early-stopping rule that fired (pruned) or the exception type (failed)."""
    point: str = ""
    trace: str = ""

    def __post_init__(self) -> None:
        # Exporters colour their messages for a terminal; a reason is stored and shown as one plain line.
        self.reason = _TERMINAL_CODES.sub("", self.reason).strip().split("\n")[0]


def busy_host(metrics: dict[str, float]) -> str:
    """How busy the host was while a noisy measurement was timed, in words."""
    return (f"other work kept the cores {100 * metrics[OUTSIDE_LOAD_MAX]:.0f} % busy "
            f"({metrics[LATENCY_ROUNDS_CLEAN]:.0f} of {metrics[LATENCY_ROUNDS_TOTAL]:.0f} timing rounds clean)")


def run_candidate(
    candidate: Candidate,
    pipeline: CompressionPipeline,
    evaluation: EvaluationSettings,
    placement: Placement,
    workdir: Path,
    yardstick: Yardstick,
    monitor: TrialMonitor | None,
) -> TrialOutcome:
    """Build and measure ``candidate``; any failure of the candidate becomes an outcome
    (fail-soft: one bad candidate never aborts the study). Ctrl-C still propagates."""
    curve = monitor.curve if monitor is not None else {}
    try:
        result = measure_candidate(candidate, pipeline, evaluation, placement, workdir, yardstick, monitor)
    except TrialStopped as exc:
        return TrialOutcome("pruned", curve=curve, reason=str(exc), rule=exc.rule, point=exc.point)
    except InvalidCandidate as exc:
        return TrialOutcome("rejected", reason=str(exc))
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        kind: Literal["failed", "host"] = "host" if host_fault(exc) else "failed"
        return TrialOutcome(kind, reason=reason, rule=type(exc).__name__, trace=traceback.format_exc())
    return TrialOutcome("complete", result=result, curve=curve)


HOST_FAULTS = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded"}


def host_fault(exc: BaseException) -> bool:
    """A full disk or quota, raised here or reported by a subprocess (the serving probe,
    onnx export): every later trial would fail the same way, so it is not the candidate's."""
    if isinstance(exc, OSError) and exc.errno in HOST_FAULTS:
        return True
    return any(text in str(exc) for text in HOST_FAULTS.values())


def make_placement(evaluation: EvaluationSettings) -> Placement:
    """Where this study's evaluators run (``evaluation.placement``); Ray connects here."""
    if evaluation.placement == "ray":
        return RayPlacement(evaluation.ray_address, evaluation.bench_resource)
    return LocalPlacement()


class NonFiniteAccuracy(RuntimeError):
    """The compressed model produced NaN/inf logits (e.g. a dtype overflow)."""


def measure_candidate(
    candidate: Candidate,
    pipeline: CompressionPipeline,
    evaluation: EvaluationSettings,
    placement: Placement,
    workdir: Path,
    yardstick: Yardstick,
    monitor: AccuracyMonitor | None = None,
) -> TrialResult:
    """Build ``candidate`` with ``pipeline`` and measure accuracy, latency and memory;
    ``monitor`` hears the validation accuracy while it trains and before serving is timed."""
    started = time.perf_counter()
    built = pipeline.build(candidate, monitor)
    result = measure_built(candidate, built, pipeline.task, evaluation, placement, workdir, yardstick, monitor)
    result.metrics["seconds_trial"] = time.perf_counter() - started
    return result


def measure_built(
    candidate: Candidate,
    built: BuiltModel,
    task: Task,
    evaluation: EvaluationSettings,
    placement: Placement,
    workdir: Path,
    yardstick: Yardstick,
    monitor: AccuracyMonitor | None = None,
) -> TrialResult:
    """Measure an already built model where ``placement`` runs evaluators: the task's metric
    on the serving artifact (named as the task names it, with its drop from
    the yardstick's teacher quality), then latency and memory in the isolated probe,
    paired with the reference workload and calibrated to the yardstick's reference."""
    workdir.mkdir(parents=True, exist_ok=True)
    example = task.serving_batch(evaluation.batch_size)
    artifact = save_artifact(candidate.runtime, built.serving, example, workdir / candidate.fingerprint())
    try:
        accuracy = placement.accuracy(artifact, task.val, task.metric)
        if math.isnan(accuracy):
            raise NonFiniteAccuracy(f"{candidate.summary()} produced non-finite outputs")
        if monitor is not None:
            monitor(SERVING_POINT, accuracy)
        test_accuracy = placement.accuracy(artifact, task.test, task.metric)
        serving = time_serving(candidate, built, artifact, example, evaluation, placement, yardstick)
    except BaseException:  # nothing of a failed measurement is left behind
        artifact.unlink(missing_ok=True)
        raise
    quality = QualityMetric(task.metric_name, task.metric_direction)
    metrics = {
        quality.name: accuracy,
        quality.test: test_accuracy,
        quality.drop: (quality.worsening(yardstick.teacher_quality, accuracy)
                       if yardstick.teacher_quality is not None else 0.0),
        **latency_metrics(serving),
        MEMORY_SPREAD_MB: serving.memory_spread_bytes / MB,
        VAL_ROWS: float(len(task.val[1])),
        MEMORY_MB: serving.memory_mb,
        MODEL_MB: built.model_bytes / MB,
        PARAMS: float(built.params),
        MACS: float(built.macs),
        LOCK_WAIT_S: serving.lock_wait_s,
        PARALLEL_OUTPUT_ERROR: serving.output_error,
        SERVING_FIRST_CALL_S: serving.first_call_s,
        **{f"rank{r}_peak_mb": peak / MB for r, peak in enumerate(serving.per_rank_peak_bytes)},
        **{f"rank{r}_weight_mb": weights / MB for r, weights in enumerate(serving.per_rank_weight_bytes)},
        **{f"seconds_{stage}": seconds for stage, seconds in built.stage_seconds.items()},
    }
    tags = {
        "quant_path": built.quant_path,
        **serving_runtime(candidate.runtime).serving_tags(built.serving),
        "simulated": str(built.simulated).lower(),
        "noisy": str(serving.noisy).lower(),
        **{f"cache_hit.{stage}": str(hit).lower() for stage, hit in built.cache_hits.items()},
    }
    return TrialResult(metrics=metrics, tags=tags, hardware=serving.hardware, artifact=artifact)


def time_serving(candidate: Candidate, built: BuiltModel, artifact: Path, example: Any, evaluation: EvaluationSettings,
                 placement: Placement, yardstick: Yardstick) -> ServingMeasurement:
    """Latency and memory of ``artifact`` (``built``'s serving file) served as ``candidate``
    says, in the isolated probe where ``placement`` runs it, calibrated to the yardstick."""
    plan = plan_ranks(built.serving, example, candidate.strategy, candidate.degree, artifact)
    protocol = evaluation.protocol(yardstick.reference_for(candidate.threads), yardstick.calibrate_threads)
    request = ServingRequest(example, candidate.threads, protocol, evaluation.timeout_s)
    return placement.measure(artifact, plan, request)


def latency_metrics(serving: ServingMeasurement) -> dict[str, float]:
    """A measurement's latency figures, calibrated and raw, and how clean its window was."""
    latency = serving.latency
    return {
        LATENCY_P50_MS: latency.p50_ms,
        LATENCY_P95_MS: latency.p95_ms,
        LATENCY_P99_MS: latency.p99_ms,
        LATENCY_MEAN_MS: latency.mean_ms,
        LATENCY_CV: latency.cv,
        LATENCY_P50_CI_LOW_MS: latency.p50_ci_low_ms,
        LATENCY_P50_CI_HIGH_MS: latency.p50_ci_high_ms,
        LATENCY_P95_CI_LOW_MS: latency.p95_ci_low_ms,
        LATENCY_P95_CI_HIGH_MS: latency.p95_ci_high_ms,
        LATENCY_RAW_P50_MS: serving.raw_latency.p50_ms,
        LATENCY_RAW_P95_MS: serving.raw_latency.p95_ms,
        LATENCY_REFERENCE_MS: serving.window_reference_ms,
        **{latency_reference_key(threads): ms for threads, ms in serving.reference_by_threads.items()},
        HOST_SLOWDOWN: serving.host_slowdown,
        LATENCY_ROUNDS_CLEAN: float(serving.rounds_clean),
        LATENCY_ROUNDS_TOTAL: float(serving.rounds_total),
        OUTSIDE_LOAD_MAX: serving.outside_load_max,
    }
