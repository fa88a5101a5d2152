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

SERVING_METRICS: dict[str, str] = {
    "latency_p50_ms": "median serving latency of one batch, ms",
    "latency_p95_ms": "95th-percentile serving latency of one batch, ms",
    "memory_mb": "peak resident memory added by serving, MiB (all ranks)",
    "model_mb": "serialized weight size, MiB (computed from packed bits when simulated)",
}
_BOUNDS = {"accuracy": (0.0, 1.0), "accuracy_drop": (-1.0, 1.0)}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


QUALITY_ATTR = "quality"
"""Study attribute: ``[metric name, direction]`` of the task a study searched (read commands name columns by it)."""

@dataclass(frozen=True)
class QualityMetric:
    """The task's quality metric: its name and direction, and the keys derived from it."""

    name: str = "accuracy"
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
        name, direction = attrs.get(QUALITY_ATTR) or ("accuracy", "maximize")  # type: ignore[misc]
        return cls(name, direction)

    def as_attr(self) -> list[str]:
        return [self.name, self.direction]


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


def accurate_enough(violations: dict[str, float], quality: QualityMetric) -> bool:
    """Whether every constraint on the quality metric holds, given Optuna's violations keyed
    by :attr:`Constraint.name`. Quality is the model's alone: another deployment of a model
    that misses it cannot meet it either, so it is not worth measuring."""
    return all(value <= 0 for name, value in violations.items()
               if quality_name(name.split(" ")[0]) == quality.name)
