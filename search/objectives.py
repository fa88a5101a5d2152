"""Metric names the search can optimise or constrain, and constraint expressions.

Every trial measures the serving metrics (:data:`SERVING_METRICS`) and the task's own
quality metric (:class:`QualityMetric`: top-1 ``accuracy`` unless the task names another,
e.g. ``r2`` maximised or ``mae`` minimised), with ``<name>_drop`` -- how much worse than
the teacher, in the metric's units and its own direction (positive is worse) -- and
``test_<name>``. Constraints are written as ``metric <= value`` / ``metric >= value`` in the
config and become Optuna constraints (feasible when the violation is <= 0).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

Direction = Literal["maximize", "minimize"]

# The keys of a trial's measured metrics, named once: Optuna's ``metrics`` attribute, the
# MLflow run, the front's tables, the deployment spec and every read command use these.
LATENCY_P50_MS = "latency_p50_ms"
LATENCY_P95_MS = "latency_p95_ms"
LATENCY_P99_MS = "latency_p99_ms"
LATENCY_MEAN_MS = "latency_mean_ms"
LATENCY_CV = "latency_cv"
LATENCY_P50_CI_LOW_MS = "latency_p50_ci_low_ms"
LATENCY_P50_CI_HIGH_MS = "latency_p50_ci_high_ms"
LATENCY_P95_CI_LOW_MS = "latency_p95_ci_low_ms"
LATENCY_P95_CI_HIGH_MS = "latency_p95_ci_high_ms"
LATENCY_RAW_P50_MS = "latency_raw_p50_ms"
LATENCY_RAW_P95_MS = "latency_raw_p95_ms"
LATENCY_REFERENCE_MS = "latency_reference_ms"
"""The paired reference workload's median in a measurement's window."""


_PER_THREADS = f"{LATENCY_REFERENCE_MS}_t"


def latency_reference_key(threads: int) -> str:
    """The baseline's calibrated reference at ``threads`` threads: every later trial
    served on that many threads is scaled to it (the reference's speed depends on them)."""
    return f"{_PER_THREADS}{threads}"


def latency_references(metrics: dict[str, float]) -> dict[int, float]:
    """The calibrated references among ``metrics``, by thread count."""
    counts = {key: key.removeprefix(_PER_THREADS) for key in metrics if key.startswith(_PER_THREADS)}
    return {int(count): metrics[key] for key, count in counts.items() if count.isdigit()}
HOST_SLOWDOWN = "host_slowdown"
LATENCY_ROUNDS_CLEAN = "latency_rounds_clean"
LATENCY_ROUNDS_TOTAL = "latency_rounds_total"
OUTSIDE_LOAD_MAX = "outside_load_max"
MEMORY_MB = "memory_mb"
MEMORY_SPREAD_MB = "memory_spread_mb"
MODEL_MB = "model_mb"
PARAMS = "params"
MACS = "macs"
VAL_ROWS = "val_rows"
LOCK_WAIT_S = "lock_wait_s"
PARALLEL_OUTPUT_ERROR = "parallel_output_error"
SERVING_FIRST_CALL_S = "serving_first_call_s"
ACCURACY = "accuracy"
"""The quality metric of classification tasks (the default :class:`QualityMetric`)."""

LATENCY_READINGS = (LATENCY_P50_MS, LATENCY_P95_MS, LATENCY_P99_MS, LATENCY_P50_CI_LOW_MS, LATENCY_P50_CI_HIGH_MS,
                    LATENCY_P95_CI_LOW_MS, LATENCY_P95_CI_HIGH_MS, LATENCY_RAW_P50_MS, LATENCY_RAW_P95_MS)
"""A measurement's latency figures, calibrated and raw."""
LATENCY_CI_MS = {LATENCY_P50_MS: (LATENCY_P50_CI_LOW_MS, LATENCY_P50_CI_HIGH_MS),
                 LATENCY_P95_MS: (LATENCY_P95_CI_LOW_MS, LATENCY_P95_CI_HIGH_MS)}
"""Each latency percentile's bootstrap 95 % interval: (low, high) metric names."""

SERVING_METRICS: dict[str, str] = {
    LATENCY_P50_MS: "median serving latency of one batch, ms",
    LATENCY_P95_MS: "95th-percentile serving latency of one batch, ms",
    MEMORY_MB: "peak resident memory added by serving, MiB (all ranks)",
    MODEL_MB: "serialized weight size, MiB (computed from packed bits when simulated)",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


QUALITY_ATTR = "quality"
"""Study attribute: ``[metric name, direction]`` of the task a study searched (read commands name columns by it)."""

@dataclass(frozen=True)
class QualityMetric:
    """The task's quality metric: its name and direction, and the keys derived from it."""

    name: str = ACCURACY
    direction: Direction = "maximize"

    @property
    def drop(self) -> str:
        return f"{self.name}_drop"

    @property
    def test(self) -> str:
        return f"test_{self.name}"

    def worsening(self, teacher: float, value: float) -> float:
        """How much worse ``value`` is than the teacher's, in the metric's units (``_drop``)."""
        return teacher - value if self.direction == "maximize" else value - teacher

    def score(self, value: float) -> float:
        """``value`` on a higher-is-better scale (negated when the metric is minimised)."""
        return value if self.direction == "maximize" else -value

    @classmethod
    def of(cls, attrs: dict[str, object]) -> QualityMetric:
        """The quality metric a study recorded (``accuracy`` for studies from before it did)."""
        name, direction = attrs.get(QUALITY_ATTR) or (ACCURACY, "maximize")  # type: ignore[misc]
        return cls(name, direction)

    def as_attr(self) -> list[str]:
        return [self.name, self.direction]


ACCURACY_METRIC = QualityMetric()
"""Classification's quality metric: ``accuracy``, ``accuracy_drop``, ``test_accuracy``."""
_BOUNDS = {ACCURACY_METRIC.name: (0.0, 1.0), ACCURACY_METRIC.drop: (-1.0, 1.0)}


def quality_name(metric: str) -> str | None:
    """The quality metric a config's objective or constraint metric refers to, or ``None``
    for a serving metric (``r2_drop`` -> ``r2``, ``test_r2`` -> ``r2``)."""
    if metric in SERVING_METRICS:
        return None
    return metric.removesuffix("_drop").removeprefix("test_")

def minimising_signs(directions: Iterable[str]) -> list[float]:
    """Multiply objective values by these to minimise all of them: -1 where a direction is
    ``maximize``. The one place the search turns directions into arithmetic."""
    return [-1.0 if direction == "maximize" else 1.0 for direction in directions]


def best_of(direction: str) -> Callable[..., float]:
    """``max`` for a maximised objective, ``min`` for a minimised one."""
    return max if direction == "maximize" else min


_EXPRESSION = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: Literal["<=", ">="]
    bound: float

    @property
    def name(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 means satisfied."""
        value = metrics[self.metric]
        if math.isnan(value):
            return math.inf
        return value - self.bound if self.op == "<=" else self.bound - value

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = _EXPRESSION.match(text)
        if not match:
            raise ValueError(f"'{text}' is not of the form 'metric <= number' or 'metric >= number'")
        metric, op, raw = match.groups()
        if not _NAME.match(metric):
            raise ValueError(f"'{metric}' in '{text}' is not a metric name; use the task's metric (e.g. accuracy, "
                             f"accuracy_drop) or one of {sorted(SERVING_METRICS)}")
        bound = float(raw)
        low, high = _BOUNDS.get(metric, (0.0, math.inf))
        if (op == "<=" and bound < low) or (op == ">=" and bound > high):
            raise ValueError(f"'{text}' can never hold ({metric} lies in [{low:g}, {high:g}])")
        return cls(metric, op, bound)  # type: ignore[arg-type]


def accurate_enough(constraints: Iterable[Constraint], metrics: dict[str, float], quality: QualityMetric) -> bool:
    """Whether every constraint on the quality metric holds for ``metrics``. Quality is the
    model's alone: another deployment of a model that misses it cannot meet it either, so
    it is not worth measuring."""
    return all(c.violation(metrics) <= 0 for c in constraints if quality_name(c.metric) == quality.name)
