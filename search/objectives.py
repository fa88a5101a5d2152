"""Metric names the search can optimise or constrain, and constraint expressions.

Constraints are written as ``metric <= value`` / ``metric >= value`` in the config and
become Optuna constraints (feasible when the violation is <= 0). ``accuracy_drop`` is the
teacher's validation accuracy minus the candidate's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

Direction = Literal["maximize", "minimize"]

METRICS: dict[str, str] = {
    "accuracy": "validation accuracy (task metric)",
    "latency_p50_ms": "median serving latency of one batch, ms",
    "latency_p95_ms": "95th-percentile serving latency of one batch, ms",
    "memory_mb": "peak resident memory added by serving, MiB (all ranks)",
    "model_mb": "serialized weight size, MiB (computed from packed bits when simulated)",
}
CONSTRAINABLE = {**METRICS, "accuracy_drop": "teacher accuracy minus candidate accuracy"}
_BOUNDS = {"accuracy": (0.0, 1.0), "accuracy_drop": (-1.0, 1.0)}

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
        if metric not in CONSTRAINABLE:
            raise ValueError(f"unknown metric '{metric}' in '{text}'; choose from {sorted(CONSTRAINABLE)}")
        bound = float(raw)
        low, high = _BOUNDS.get(metric, (0.0, math.inf))
        if (op == "<=" and bound < low) or (op == ">=" and bound > high):
            raise ValueError(f"'{text}' can never hold ({metric} lies in [{low:g}, {high:g}])")
        return cls(metric, op, bound)  # type: ignore[arg-type]


def accurate_enough(violations: dict[str, float]) -> bool:
    """Whether every accuracy constraint holds, given Optuna's violations keyed by
    :attr:`Constraint.name`. Accuracy is the model's alone: another deployment of a model
    that misses it cannot meet it either, so it is not worth measuring."""
    return all(value <= 0 for name, value in violations.items() if name.split(" ")[0] in ("accuracy", "accuracy_drop"))
