"""Choosing what to deploy: limits, preference, and why each other candidate was not chosen.

Limits are checked against the metrics recorded in the study; the latency limit applies
to p95 (a deployment budget is about the tail, not the median). Simulated candidates
(sub-8-bit fake-quant) are excluded unless asked for: their size is computed and their
speed is not a real low-bit kernel, so deploying them would not deliver the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial

from slimsearch.spaces.errors import SlimsearchError
from slimsearch.search.objectives import LATENCY_P95_MS, MEMORY_MB, QualityMetric
from slimsearch.search.review.study_review import StudyReview, knee_trial
from slimsearch.spaces import DEFAULT_RUNTIME, runtime_spec, runtime_specs
from slimsearch.search.store import records

PREFERENCES = ("latency", "memory", "knee")
"""Besides the task's metric by name (``accuracy``, ``r2``, ...): the best value of it."""
_PREFERENCE_KEY = {"latency": (LATENCY_P95_MS, 1.0), "memory": (MEMORY_MB, 1.0)}


@dataclass(frozen=True)
class Limits:
    max_latency_ms: float | None = None
    max_memory_mb: float | None = None
    max_drop: float | None = None
    """How much worse than the teacher on the task's metric (``<metric>_drop``), in its units."""
    quality: QualityMetric = QualityMetric()

    def _pairs(self) -> list[tuple[str, str, float]]:
        named = ((LATENCY_P95_MS, "--max-latency-ms", self.max_latency_ms),
                 (MEMORY_MB, "--max-memory-mb", self.max_memory_mb),
                 (self.quality.drop, "--max-drop", self.max_drop))
        return [(metric, flag, bound) for metric, flag, bound in named if bound is not None]

    def violations(self, metrics: dict[str, float]) -> list[str]:
        """Human-readable reasons, e.g. ``latency_p95_ms 2.41 > 2 (--max-latency-ms)``."""
        return [f"{metric} {metrics[metric]:.4g} > {bound:g} ({flag})"
                for metric, flag, bound in self._pairs() if metrics[metric] > bound]

    def excess(self, metrics: dict[str, float]) -> float:
        """Total relative overshoot, to rank the closest candidates when none fits."""
        return sum(max(0.0, metrics[m] - b) / max(abs(b), 1e-3) for m, _, b in self._pairs())


class DeploymentError(SlimsearchError, RuntimeError):
    """No deployment can be made as asked (no trial meets the limits, the registry is not
    where the study logged); the message says what was found and what to change."""


@dataclass
class Selection:
    chosen: FrozenTrial | None
    eligible: list[FrozenTrial]
    excluded: dict[int, list[str]] = field(default_factory=dict)
    """Trial number -> reasons it cannot be chosen."""
    closest: list[FrozenTrial] = field(default_factory=list)


def select(review: StudyReview, limits: Limits, prefer: str = "knee", allow_simulated: bool = False,
           trial_number: int | None = None, exportable_as: Sequence[str] = ()) -> Selection:
    """The best eligible trial by ``prefer`` (or trial ``trial_number``, if eligible), with
    every other trial's reasons for exclusion. A trial is eligible when it meets the limits,
    is not simulated (unless allowed) and can be exported in every format of ``exportable_as``."""
    if prefer not in (*PREFERENCES, review.quality.name):
        raise ValueError(f"unknown preference '{prefer}'; choose from {', '.join(PREFERENCES)}, {review.quality.name}")
    eligible, excluded, considered = [], {}, []
    pool = [t for t in review.complete if trial_number is None or t.number == trial_number]
    for trial in pool:
        metrics = trial.user_attrs.get(records.METRICS, {})
        reasons = limits.violations(metrics)
        reasons += [reason for fmt in exportable_as if (reason := export_problem(trial, fmt))]
        if trial.user_attrs.get(records.SIMULATED) and not allow_simulated:
            reasons.append("simulated bit width (fake-quant); pass --allow-simulated to consider it")
        else:
            considered.append(trial)
        if reasons:
            excluded[trial.number] = reasons
        else:
            eligible.append(trial)
    if not eligible:
        closest = sorted(considered, key=lambda t: limits.excess(t.user_attrs.get(records.METRICS, {})))[:3]
        return Selection(None, [], excluded, closest)
    chosen = _best(eligible, prefer, review)
    by_number = {t.number: t for t in eligible}
    while (simpler := by_number.get(review.within_noise.get(chosen.number, -1))) is not None:
        chosen = simpler  # equal within measurement noise: the simpler point ships
    return Selection(chosen, eligible, excluded)


def export_problem(trial: FrozenTrial, fmt: str) -> str | None:
    """Why the trial's model cannot be exported as ``fmt``, known from its candidate and the
    runtime rows: a runtime that converts the model exports its own artifact only; a
    torch-served graph exports in the formats that take its bit width."""
    candidate = trial.user_attrs.get(records.CANDIDATE, {})
    served, bits = runtime_spec(candidate.get("runtime", DEFAULT_RUNTIME)), candidate.get("bits", 32)
    if served.converts:
        return None if fmt == served.export_format else f"deployed on {served.name}: exported as {served.export_format}, not {fmt}"
    takes = [spec.export_format for spec in runtime_specs() if bits in spec.export_bits]
    return None if fmt in takes else f"a torch graph at {bits} bits exports as {' or '.join(takes)} only, not {fmt}"


def _best(eligible: list[FrozenTrial], prefer: str, review: StudyReview) -> FrozenTrial:
    if prefer == "knee":
        knee = knee_trial(eligible, list(review.objectives.values()))
        assert knee is not None
        return knee
    quality = review.quality
    metric, sign = _PREFERENCE_KEY.get(prefer, (quality.name, -quality.score(1.0)))
    # Ties (same rounded metric) go to the better task metric, then to the earlier trial.
    return min(eligible, key=lambda t: (sign * t.user_attrs[records.METRICS][metric],
                                        -quality.score(t.user_attrs[records.METRICS][quality.name]), t.number))
