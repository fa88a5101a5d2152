"""Turning a selected trial into a deployable artifact plus ``deployment.yaml``.

The candidate is rebuilt from the study's own config (stage cache hits make this cheap)
and re-measured in the isolated probe: the deployment spec reports the *re-measured*
numbers, and a re-measurement that breaks a limit refuses the deployment instead of
shipping a model whose search-time figure was luck.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import yaml
from optuna.trial import FrozenTrial

from slimsearch.search.objectives import (
    LATENCY_CV,
    LATENCY_MEAN_MS,
    LATENCY_P50_CI_HIGH_MS,
    LATENCY_P50_CI_LOW_MS,
    LATENCY_P50_MS,
    LATENCY_P95_MS,
    LATENCY_P99_MS,
    LATENCY_ROUNDS_CLEAN,
    LATENCY_ROUNDS_TOTAL,
    MACS,
    MEMORY_MB,
    MODEL_MB,
    OUTSIDE_LOAD_MAX,
    PARAMS,
)
from slimsearch.evaluators import hardware_identity, serving_runtime
from slimsearch.pipelines import CompressionPipeline, load_task
from slimsearch.pipelines.export import export_model
from slimsearch.search.config import SlimsearchConfig
from slimsearch.search.review.study_review import StudyReview
from slimsearch.search.review.selection import DeploymentError, Limits
from slimsearch.search.loop.confirmation import (confirm, describe, teacher_trial, trials_to_confirm,
                                                 unconfirmed_members)
from slimsearch.search.loop.trial import TrialResult, Yardstick, busy_host, make_placement, measure_built
from slimsearch.spaces import Candidate, runtime_spec
from slimsearch.search.store import records


class SelectionRefused(DeploymentError):
    """The re-measured candidate breaks a limit; nothing was exported or registered."""

    exit_code = 3
    label = "refused"


SIGNATURE_ROWS = 4
"""Real validation rows (and the compressed model's outputs on them) that the registered
model's input/output signature is inferred from."""


@dataclass
class Deployment:
    directory: Path
    files: dict[str, Path]
    spec_path: Path
    spec: dict[str, Any]
    remeasured: TrialResult
    example: tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]
    """Rows as the registered model's ``predict`` takes them (named inputs: a dict), and its outputs."""


def _study_pipeline(review: StudyReview) -> tuple[SlimsearchConfig, CompressionPipeline]:
    """The study's config and its compression pipeline (the teacher from the stage cache),
    loaded once per process: ``select`` confirms the front, then rebuilds its choice."""
    return _pipeline_of(json.dumps(review.config, sort_keys=True, default=str))


@functools.lru_cache(maxsize=1)
def _pipeline_of(config_json: str) -> tuple[SlimsearchConfig, CompressionPipeline]:
    config = SlimsearchConfig.model_validate(json.loads(config_json))
    task = load_task(config.task, config.search.seed)
    return config, CompressionPipeline(task, config.cache_dir, config.training.recipe(), config.search.seed,
                                       config.evaluation.calibration_size)


def confirmed_review(review: StudyReview, say: Callable[[str], None]) -> StudyReview:
    """``review`` with its front confirmed: when a front member was never re-measured with the
    others (the run was stopped before its end, or the front changed since), the front is
    confirmed now and the study read again."""
    passes = SlimsearchConfig.model_validate(review.config).evaluation.confirm_passes
    if not passes or not unconfirmed_members(review.study, review.ledger.front_trials()):
        return review
    config, pipeline = _study_pipeline(review)
    teacher = teacher_trial(review.complete, review.baseline)
    trials = trials_to_confirm(review.ledger.front_trials(), review.complete, list(review.objectives),
                               list(review.objectives.values()), teacher)
    with tempfile.TemporaryDirectory(prefix="slimsearch-confirm-") as scratch:
        confirmed = confirm(review.study, trials, pipeline, config.evaluation, make_placement(config.evaluation),
                            Path(scratch), Yardstick.of(review.baseline, review.quality.name), say, teacher)
    say(describe(confirmed))
    return StudyReview(review.study)


def build_deployment(
    review: StudyReview, trial: FrozenTrial, limits: Limits, formats: list[str], directory: Path,
    allow_noisy: bool = False,
) -> Deployment:
    """Rebuild, re-measure, check limits, export in ``formats`` and write the deployment spec.
    A re-measurement timed on a busy host proves nothing about the limits: refused unless
    ``allow_noisy``."""
    config, pipeline = _study_pipeline(review)
    task = pipeline.task
    candidate = Candidate.from_dict(trial.user_attrs[records.CANDIDATE])
    built = pipeline.build(candidate)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slimsearch-remeasure-") as scratch:  # nothing left in the deploy folder
        remeasured = measure_built(candidate, built, task, config.evaluation, make_placement(config.evaluation),
                                   Path(scratch), Yardstick.of(review.baseline, review.quality.name))
    if remeasured.tags["noisy"] == "true" and not allow_noisy:
        raise SelectionRefused(f"trial {trial.number}'s re-measurement was timed on a busy host "
                               f"({busy_host(remeasured.metrics)}): its latency proves nothing; run select again "
                               "when the host is quieter, or pass --allow-noisy")
    broken = limits.violations(remeasured.metrics)
    if broken:
        searched = trial.user_attrs[records.METRICS]
        raise SelectionRefused(
            f"trial {trial.number} re-measured in isolation breaks {'; '.join(broken)} "
            f"(the search measured latency_p95_ms {searched[LATENCY_P95_MS]:.4g}, memory_mb {searched[MEMORY_MB]:.4g}); "
            "loosen the limit or choose with a margin"
        )
    example = task.serving_batch(config.evaluation.batch_size)
    with _replaced_atomically(directory) as staging:
        files = {fmt: export_model(built.serving, candidate.runtime, example, fmt, staging / "model") for fmt in formats}
        spec = _spec(review, trial, candidate, config, built.quant_path, remeasured, files, task.input_signature())
        (staging / "deployment.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    files = {fmt: directory / path.name for fmt, path in files.items()}
    return Deployment(directory, files, directory / "deployment.yaml", spec, remeasured,
                      _example(built.serving, example[:SIGNATURE_ROWS], task.input_names))


def _example(model: torch.nn.Module, rows: torch.Tensor, input_names: tuple[str, ...] | None
             ) -> tuple[np.ndarray | dict[str, np.ndarray], np.ndarray]:
    """A few real rows as a user passes them to the registered model, and the compressed
    model's outputs on them (several named inputs travel packed along dimension 1)."""
    with torch.inference_mode():
        outputs = model(rows).float().numpy()
    if input_names:
        return {name: rows[:, i].numpy() for i, name in enumerate(input_names)}, outputs
    return rows.numpy(), outputs


@contextlib.contextmanager
def _replaced_atomically(directory: Path) -> Iterator[Path]:
    """A staging folder beside ``directory`` that replaces it only once complete: a killed
    ``select`` leaves the previous deployment (or none) whole, never one trial's model
    beside another's ``deployment.yaml``. Leftovers of killed runs are removed first."""
    for leftover in directory.parent.glob(f".{directory.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = directory.parent / f".{directory.name}.staging-{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = directory.parent / f".{directory.name}.retired-{os.getpid()}"
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)


def _spec(
    review: StudyReview,
    trial: FrozenTrial,
    candidate: Candidate,
    config: SlimsearchConfig,
    quant_path: str,
    remeasured: TrialResult,
    files: dict[str, Path],
    input_signature: dict[str, Any],
) -> dict[str, Any]:
    m, quality = remeasured.metrics, review.quality
    return {
        "study": review.study.study_name,
        "trial": trial.number,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "task": config.task,
        "configuration": candidate.summary(),
        "compression": {**candidate.to_dict(), "quant_path": quant_path, "simulated": candidate.simulated},
        "parallel_plan": {"strategy": candidate.strategy, "degree": candidate.degree, "threads_per_rank": candidate.threads},
        "serving": {"batch_size": config.evaluation.batch_size, **input_signature,
                    **_session_settings(candidate)},
        "measured": {
            "source": "re-measured in an isolated probe process at selection time",
            "metric": {"name": quality.name, "direction": quality.direction},
            quality.name: m[quality.name],
            quality.test: m[quality.test],
            quality.drop: m[quality.drop],
            "latency_ms": {"p50": m[LATENCY_P50_MS], "p95": m[LATENCY_P95_MS], "p99": m[LATENCY_P99_MS],
                           "mean": m[LATENCY_MEAN_MS], "cv": m[LATENCY_CV],
                           "p50_ci95": [m[LATENCY_P50_CI_LOW_MS], m[LATENCY_P50_CI_HIGH_MS]]},
            "timing": {"rounds_clean": int(m[LATENCY_ROUNDS_CLEAN]), "rounds_total": int(m[LATENCY_ROUNDS_TOTAL]),
                       OUTSIDE_LOAD_MAX: m[OUTSIDE_LOAD_MAX], "noisy": remeasured.tags["noisy"] == "true"},
            MEMORY_MB: m[MEMORY_MB],
            MODEL_MB: m[MODEL_MB],
            PARAMS: int(m[PARAMS]),
            MACS: int(m[MACS]),
        },
        "search_measured": {k: trial.user_attrs[records.METRICS][k] for k in (quality.name, LATENCY_P50_MS, LATENCY_P95_MS, MEMORY_MB)},
        "hardware": {"measured_on": remeasured.hardware, "study_baseline_on": review.baseline.get("hardware", {}),
                     "this_host": hardware_identity()},
        "versions": _versions(runtime_spec(candidate.runtime).packages),
        "artifacts": {fmt: path.name for fmt, path in files.items()},
    }


def _session_settings(candidate: Candidate) -> dict[str, Any]:
    settings = serving_runtime(candidate.runtime).session_settings(candidate.threads)
    return {"session": settings} if settings else {}


def _versions(runtime_packages: tuple[str, ...]) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("slimsearch", "torch", "torch-pruning", "optuna", "mlflow", *runtime_packages):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
