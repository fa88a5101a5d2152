"""One resolved point of the combined space: everything needed to build and serve a model.

A ``Candidate`` is frozen (hashable, usable as a cache key) and round-trips through
JSON, so it can be stored in Optuna user attributes, MLflow params and deployment specs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from slimsearch.spaces.runtimes import DEFAULT_RUNTIME, Strategy


@dataclass(frozen=True)
class StudentChoice:
    """A distilled student: a member of the task's student family plus KD settings.

    ``feature_weight`` > 0 adds intermediate-feature hints; ``epochs`` is the student's
    training budget (``None``: the config's ``training.distill_epochs``); ``init`` is
    ``scratch`` (the task's student family, randomly initialised) or ``teacher`` (the
    teacher's own layers, ``depth`` of them, heads and FFN cut to ``width``).
    """

    width: float
    depth: int
    temperature: float
    alpha: float
    feature_weight: float = 0.0
    epochs: int | None = None
    init: str = "scratch"


@dataclass(frozen=True)
class Candidate:
    """A fully resolved compression + deployment configuration.

    ``student`` is ``None`` when the teacher architecture itself is kept.
    ``float_dtype`` is only set for 16-bit candidates; ``degree`` is 1 for ``single``.
    The pruning method fields keep their defaults when ``prune_ratio`` is 0 (and in
    candidates stored before they existed).
    """

    student: StudentChoice | None
    prune_ratio: float
    bits: int
    float_dtype: str | None
    strategy: Strategy
    degree: int
    threads: int
    prune_importance: str = "l1"
    prune_scope: str = "uniform"
    prune_steps: int = 1
    qat: bool = False
    runtime: str = DEFAULT_RUNTIME
    rank_ratio: float = 0.0
    """Low-rank factorisation of Linear layers (fraction of full rank kept; 0 = none)."""

    @property
    def simulated(self) -> bool:
        """Bit widths below 8 run as fake-quant: their speed and size are not real kernels."""
        return self.bits < 8

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        student = data.get("student")
        fields = {**data, "student": StudentChoice(**student) if student else None}
        return cls(**fields)

    def fingerprint(self) -> str:
        """Stable short hash of the candidate, for file names and de-duplication."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def serving_key(self) -> str:
        """What fixes serving latency and memory: architecture, pruning, precision and
        deployment, but not the distillation or QAT settings, which only change weight values."""
        student = (self.student.width, self.student.depth) if self.student else None
        return json.dumps([student, self.prune_ratio, self.prune_importance, self.prune_scope, self.prune_steps,
                           *([self.rank_ratio] if self.rank_ratio else []),
                           self.bits, self.float_dtype, self.strategy, self.degree, self.threads, self.runtime])

    def flat(self) -> dict[str, Any]:
        """Flat ``dimension.param`` view, the names used in Optuna and MLflow."""
        s = self.student
        return {
            "student": "distilled" if s else "teacher",
            "student.width": s.width if s else None,
            "student.depth": s.depth if s else None,
            "student.temperature": s.temperature if s else None,
            "student.alpha": s.alpha if s else None,
            "student.feature_weight": s.feature_weight if s else None,
            "student.epochs": s.epochs if s else None,
            "student.init": s.init if s else None,
            "prune.ratio": self.prune_ratio,
            "prune.importance": self.prune_importance if self.prune_ratio else None,
            "prune.scope": self.prune_scope if self.prune_ratio else None,
            "prune.steps": self.prune_steps if self.prune_ratio else None,
            "lowrank.rank_ratio": self.rank_ratio,
            "quantize.bits": self.bits,
            "quantize.float_dtype": self.float_dtype,
            "quantize.qat": self.qat if self.bits == 8 else None,
            "parallel.strategy": self.strategy,
            "parallel.degree": self.degree,
            "parallel.threads": self.threads,
            "parallel.runtime": self.runtime,
        }

    def summary(self) -> str:
        """One short human line, e.g. ``student w0.5 d2 | prune 0.3 | int8 | single x1 t2``."""
        arch = "teacher"
        if s := self.student:
            arch = f"student w{s.width:g} d{s.depth}" + (f" e{s.epochs}" if s.epochs else "")
            arch += f" hints {s.feature_weight:g}" if s.feature_weight else ""
            arch += " from teacher" if s.init == "teacher" else ""
        if self.bits == 16:
            precision = self.float_dtype or "fp16"
        elif self.bits == 32:
            precision = "fp32"
        else:
            precision = f"int{self.bits}" + (" qat" if self.qat else "") + (" (simulated)" if self.simulated else "")
        prune = f"prune {self.prune_ratio:g}"
        if self.prune_ratio and (self.prune_importance, self.prune_scope, self.prune_steps) != ("l1", "uniform", 1):
            prune += f" {self.prune_importance} {self.prune_scope}" + (f" x{self.prune_steps}" if self.prune_steps > 1 else "")
        prune += f" | rank {self.rank_ratio:g}" if self.rank_ratio else ""
        return (
            f"{arch} | {prune} | {precision} | "
            f"{self.strategy} x{self.degree} t{self.threads}" + (f" | {self.runtime}" if self.runtime != DEFAULT_RUNTIME else "")
        )
