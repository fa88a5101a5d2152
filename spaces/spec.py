"""Declarative description of the combined space, validated when the config is loaded.

Each dimension has defaults that suit the built-in digits task, so a config only needs
to name what it changes. Validation errors name the exact field (pydantic location).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slimsearch.spaces.runtimes import DEFAULT_RUNTIMES, Strategy, runtime_spec, runtime_specs

PRUNE_IMPORTANCE = ("l1", "l2", "taylor", "random")
FLOAT16_DTYPES = ("float16", "bfloat16")
SUPPORTED_BITS = (32, 16, 8, 6, 4, 3, 2)


class _Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PruneSpec(_Strict):
    """Structured channel pruning: ratio range (0 = no pruning) and, for ratios above 0,
    how channels are chosen. ``importance``: weight magnitude (``l1``, ``l2``), first-order
    ``taylor`` (|weight x gradient| on a training batch) or ``random`` (the baseline the
    others must beat). ``scope``: ``uniform`` (every layer loses ``ratio`` of its
    channels) or ``global`` (the least important channels of the whole model go, so
    layers lose different shares). ``steps``: 1 = one-shot; k = prune in k increments
    with a fine-tune after each (k times the fine-tune cost)."""

    low: float = Field(0.0, ge=0.0, le=0.9)
    high: float = Field(0.7, ge=0.0, le=0.9)
    step: float = Field(0.1, gt=0.0, le=0.9)
    importance: list[Literal["l1", "l2", "taylor", "random"]] = Field(default_factory=lambda: ["l1"], min_length=1)
    scope: list[Literal["uniform", "global"]] = Field(default_factory=lambda: ["uniform"], min_length=1)
    steps: list[int] = Field(default_factory=lambda: [1], min_length=1)

    @field_validator("steps")
    @classmethod
    def _positive_steps(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= k <= 5 for k in steps):
            raise ValueError("pruning steps must be in 1..5 (1 = one-shot)")
        return steps

    @model_validator(mode="after")
    def _ordered(self) -> PruneSpec:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class QuantizeSpec(_Strict):
    """Bit widths to try; below 8 runs as fake-quant and is labelled ``simulated``."""

    bits: list[int] = Field(default_factory=lambda: [32, 16, 8, 4])
    float16_dtypes: list[Literal["float16", "bfloat16"]] = Field(
        default_factory=lambda: ["float16", "bfloat16"]
    )
    qat: list[bool] = Field(
        default_factory=lambda: [False], min_length=1,
        description="int8 with quantization-aware fine-tuning (conv models); [false, true] lets the search choose",
    )

    @field_validator("bits")
    @classmethod
    def _known_bits(cls, bits: list[int]) -> list[int]:
        if not bits:
            raise ValueError("needs at least one bit width")
        unknown = sorted(set(bits) - set(SUPPORTED_BITS))
        if unknown:
            raise ValueError(f"unsupported bit width(s) {unknown}; choose from {list(SUPPORTED_BITS)}")
        return bits


class LowRankSpec(_Strict):
    """Low-rank factorisation of Linear layers (truncated SVD, then fine-tuned): the fraction
    of each layer's full rank kept; 0 = not factorised."""

    ratios: list[float] = Field(default_factory=lambda: [0.0], min_length=1)

    @field_validator("ratios")
    @classmethod
    def _in_unit(cls, ratios: list[float]) -> list[float]:
        if any(not 0.0 <= r < 1.0 for r in ratios):
            raise ValueError("rank ratios must be in [0, 1) (0 = no factorisation)")
        return ratios


class StudentSpec(_Strict):
    """Distil into a member of the task's student family, or keep the teacher."""

    keep_teacher: bool = True
    distill: bool = True
    width: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    depth: list[int] = Field(default_factory=lambda: [2, 3])
    temperature: list[float] = Field(default_factory=lambda: [2.0, 4.0])
    alpha: list[float] = Field(default_factory=lambda: [0.0, 0.5])
    feature_weight: list[float] = Field(
        default_factory=lambda: [0.0],
        description="weight of intermediate-feature hints (0 = logits only); needs the models' feature_stages()",
    )
    epochs: list[int] = Field(
        default_factory=list,
        description="the student's training budget, searched as a fidelity; empty = training.distill_epochs",
    )
    init: list[Literal["scratch", "teacher"]] = Field(
        default_factory=lambda: ["scratch"], min_length=1,
        description="scratch: the task's student family; teacher: the teacher's own layers (depth of them, "
                    "evenly spaced) with heads/FFN cut to width -- transformers with head-aware attention",
    )

    @field_validator("width")
    @classmethod
    def _positive_width(cls, widths: list[float]) -> list[float]:
        if not widths or any(w <= 0 or w > 4 for w in widths):
            raise ValueError("width multipliers must be in (0, 4]")
        return widths

    @field_validator("depth")
    @classmethod
    def _positive_depth(cls, depths: list[int]) -> list[int]:
        if not depths or any(d < 1 for d in depths):
            raise ValueError("depths must be >= 1")
        return depths

    @field_validator("feature_weight")
    @classmethod
    def _non_negative_weight(cls, weights: list[float]) -> list[float]:
        if not weights or any(w < 0 for w in weights):
            raise ValueError("feature_weight must be a non-empty list of numbers >= 0")
        return weights

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, epochs: list[int]) -> list[int]:
        if any(e < 1 for e in epochs):
            raise ValueError("epochs must be >= 1 (or an empty list for training.distill_epochs)")
        return epochs

    @field_validator("alpha")
    @classmethod
    def _alpha_in_unit(cls, alphas: list[float]) -> list[float]:
        if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
            raise ValueError("alpha (weight of the distillation loss) must be in [0, 1]")
        return alphas

    @field_validator("temperature")
    @classmethod
    def _positive_temperature(cls, temps: list[float]) -> list[float]:
        if not temps or any(t <= 0 for t in temps):
            raise ValueError("temperatures must be > 0")
        return temps

    @model_validator(mode="after")
    def _some_architecture(self) -> StudentSpec:
        if not (self.keep_teacher or self.distill):
            raise ValueError("keep_teacher and distill are both false: no architecture left to search")
        return self


class ParallelSpec(_Strict):
    """How the compressed model is served: strategy, degree (ranks) and threads per rank."""

    strategies: list[Strategy] = Field(
        default_factory=lambda: ["single", "data_parallel"]
    )
    degree: list[int] = Field(default_factory=lambda: [2])
    threads: list[int] = Field(default_factory=lambda: [1, 2])
    runtimes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RUNTIMES), min_length=1,
        description="serving runtimes: " + "; ".join(f"{r.name} = {r.description}" for r in runtime_specs()),
    )

    @field_validator("degree", "threads")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError("must be a non-empty list of integers >= 1")
        return values

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, values: list[str]) -> list[str]:
        for name in values:
            runtime_spec(name)  # an unknown name raises, listing the known ones
        return values

    @field_validator("strategies")
    @classmethod
    def _non_empty(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("needs at least one strategy")
        return values


class SpaceSpec(_Strict):
    """The four dimensions searched together in one study."""

    prune: PruneSpec = Field(default_factory=PruneSpec)
    lowrank: LowRankSpec = Field(default_factory=LowRankSpec)
    quantize: QuantizeSpec = Field(default_factory=QuantizeSpec)
    student: StudentSpec = Field(default_factory=StudentSpec)
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)

    @property
    def students_from_scratch(self) -> bool:
        """Whether some candidate trains a student of the task's own family from scratch."""
        return self.student.distill and "scratch" in self.student.init
