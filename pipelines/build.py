"""Candidate -> compressed, ready-to-serve model: distil -> prune -> fine-tune -> quantize,
then handed to its serving runtime (``evaluators.runtimes``): torch's own quantization
wrapped for the runtime, or the runtime's own conversion and int8 of the float model
(a cached stage, e.g. onnxruntime's export or OpenVINO's IR).

:class:`CompressionPipeline` is created once per study process (it holds the task, the
teacher and its cached logits) and builds one :class:`BuiltModel` per candidate, with
per-stage wall times and cache hits recorded for the trial.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from slimsearch.evaluators.accuracy import evaluate_accuracy
from slimsearch.evaluators.memory import state_dict_bytes
from slimsearch.evaluators.rank_plans import deployment_problem
from slimsearch.evaluators.runtimes import ServingRuntime, serving_runtime
from slimsearch.pipelines import stages
from slimsearch.pipelines.cache import StageCache
from slimsearch.pipelines.features import FeatureHints
from slimsearch.pipelines.lowrank import factorizable, factorize
from slimsearch.pipelines.pruning import PruningChoice, prune_channels, pruning_problem
from slimsearch.pipelines.quantize import QuantizedModel, quantize
from slimsearch.pipelines.students import teacher_init_problem
from slimsearch.pipelines.stages import StageResult, TrainingRecipe
from slimsearch.pipelines.task import Task
from slimsearch.pipelines.training import Distillation, EpochHook, TrainingProgress
from slimsearch.spaces import Candidate, runtime_spec

AccuracyMonitor = Callable[[str, float], None]
"""Receives ``(point, validation accuracy)`` while a candidate trains — points are named
``"distill 3/10"``, ``"finetune 1/3"`` — and may raise to stop the build early."""


@dataclass
class BuiltModel:
    """A compressed model plus the facts about how it was built."""

    serving: nn.Module
    quant_path: str
    simulated: bool
    model_bytes: int
    params: int
    macs: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)


class CompressionPipeline:
    """Builds candidates for one task; the teacher is trained (or loaded) on construction."""

    def __init__(self, task: Task, cache_dir: str | Path, recipe: TrainingRecipe, seed: int, calibration_size: int = 256,
                 teacher_progress: TrainingProgress | None = None):
        self.task = task
        self.cache = StageCache(cache_dir)
        self.recipe = recipe
        self.seed = seed
        self.calibration = task.train[0][:calibration_size]
        self.teacher = stages.teacher(task, self.cache, recipe, seed, teacher_progress)
        self._soft_targets: torch.Tensor | None = None
        self._problems: dict[tuple[object, ...], str | None] = {}
        self._structures: dict[tuple[object, ...], tuple[int, int]] = {}

    @property
    def soft_targets(self) -> torch.Tensor:
        if self._soft_targets is None:
            self._soft_targets = stages.teacher_logits(self.task, self.cache, self.teacher)
        return self._soft_targets

    @cached_property
    def teacher_features(self) -> list[torch.Tensor]:
        """The teacher's stage outputs on the training split, read once per process."""
        return stages.teacher_features(self.task, self.cache, self.teacher)

    def rejection(self, candidate: Candidate) -> str | None:
        """Why ``candidate``'s architecture cannot be pruned or deployed as asked, found on an
        untrained copy before any training (remembered per architecture and plan), or ``None``."""
        student = (candidate.student.width, candidate.student.depth) if candidate.student else None
        checks: list[tuple[tuple[object, ...], Callable[[], str | None]]] = []
        if candidate.student and candidate.student.init == "teacher":
            checks.append((("init", student), lambda: teacher_init_problem(
                self.teacher.model, *student, has_student_family=self.task.student_architecture is not None)))
        architecture = ("teacher" if candidate.student is None else candidate.student.init, student)
        if candidate.prune_ratio > 0:
            pruning = PruningChoice(candidate.prune_ratio, candidate.prune_importance, candidate.prune_scope,
                                    candidate.prune_steps)
            checks.append((("prune", architecture, pruning.ratio, pruning.scope, pruning.steps),
                           lambda: pruning_problem(self._untrained(candidate), pruning, self.task)))
        if candidate.rank_ratio > 0:
            checks.append((("lowrank", architecture),
                           lambda: None if factorizable(self._untrained(candidate), self.task) else
                           "low-rank factorisation needs Linear layers besides the head; this model has none: "
                           "set space.lowrank.ratios: [0]"))
        if runtime_spec(candidate.runtime).converts:  # the torch graph serves whatever trained
            runtime = serving_runtime(candidate.runtime)
            checks.append(((runtime.name, architecture),
                           lambda: runtime.conversion_problem(self._untrained(candidate), self.calibration[:2])))
        if candidate.strategy in ("tensor_parallel", "pipeline_parallel"):
            checks.append((("plan", architecture, candidate.strategy, candidate.degree),
                           lambda: deployment_problem(self._untrained(candidate), self.task.serving_batch(2 * candidate.degree),
                                                      candidate.strategy, candidate.degree)))
        for key, check in checks:
            if key not in self._problems:
                try:
                    self._problems[key] = check()
                except Exception:  # noqa: BLE001 - e.g. the task's architecture itself raises: the
                    self._problems[key] = None  # trial builds it again and fails with that error, recorded
            if self._problems[key]:
                return self._problems[key]
        return None

    def structure(self, candidate: Candidate) -> tuple[int, int]:
        """MACs and parameters of ``candidate``'s model before any training: its architecture
        pruned and factorised as asked on an untrained copy (remembered per model). The cost
        predictor prices a candidate by them: on the digits table they cut its latency error
        after 20 trials from 24 % to 16 % (``search/loop/predictor.py``; 12.7 % with the
        overhead-plus-work model beside it)."""
        student = (candidate.student.width, candidate.student.depth, candidate.student.init) if candidate.student else None
        key = (student, candidate.prune_ratio, candidate.prune_scope, candidate.prune_steps, candidate.rank_ratio)
        if key not in self._structures:
            self._structures[key] = stages.count_macs_and_params(self._shaped(candidate), self.task.train[0][:1])
        return self._structures[key]

    def build_untrained(self, candidate: Candidate) -> BuiltModel:
        """``candidate``'s model as it would serve, without any training: the teacher or an
        untrained student, pruned and factorised as asked but not fine-tuned, then quantized
        or converted for its runtime (not cached). Its speed and size are the trained
        model's -- the same shapes and kernels -- but not its accuracy: the study's
        deployment calibration times such models before its first trial
        (``search/loop/calibration.py``)."""
        timings: dict[str, float] = {}
        model = self._shaped(candidate)
        macs, params = stages.count_macs_and_params(model, self.task.train[0][:1])
        runtime = serving_runtime(candidate.runtime)
        with _timed(timings, stages.QUANTIZE):
            if runtime.spec.converts:
                quantized = self._wrapped_conversion(runtime, model, candidate.bits,
                                                     runtime.convert(model, candidate.bits, self.calibration))
            else:
                quantized = quantize(model, candidate.bits, candidate.float_dtype, self.calibration)
        return _built(runtime, quantized, macs, params, timings, {})

    def _shaped(self, candidate: Candidate) -> nn.Module:
        """A copy of ``candidate``'s architecture, untrained, pruned (by weight magnitude) and
        factorised as asked: what its trained model's shapes will be."""
        model = copy.deepcopy(self._untrained(candidate))
        if candidate.prune_ratio > 0:
            prune_channels(model, PruningChoice(candidate.prune_ratio, "l1", candidate.prune_scope,
                                                candidate.prune_steps), self.task)
        if candidate.rank_ratio > 0:
            factorize(model, candidate.rank_ratio, self.task)
        return model

    def _untrained(self, candidate: Candidate) -> nn.Module:
        """The candidate's architecture: the teacher as it is, or an untrained student."""
        choice = candidate.student
        return self.teacher.model if choice is None else stages.student_architecture(self.task, choice, self.teacher.model)

    def build(self, candidate: Candidate, monitor: AccuracyMonitor | None = None) -> BuiltModel:
        """Build ``candidate``; with ``monitor``, report validation accuracy after every
        training epoch (and once for a stage loaded from the cache)."""
        timings: dict[str, float] = {}
        hits: dict[str, bool] = {}
        base, distillation = self._architecture(candidate, timings, hits, monitor)
        if candidate.prune_ratio > 0:
            hook = self._epoch_hook("finetune", monitor)
            with _timed(timings, stages.PRUNE_FINETUNE):
                pruning = PruningChoice(candidate.prune_ratio, candidate.prune_importance,
                                               candidate.prune_scope, candidate.prune_steps)
                base = stages.pruned_and_finetuned(
                    self.task, self.cache, self.recipe, self.seed, base, pruning, distillation, hook
                )
            hits[stages.PRUNE_FINETUNE] = base.cache_hit
            if base.cache_hit and hook:
                epochs = self.recipe.finetune_epochs * candidate.prune_steps
                hook(epochs, epochs, base.model)
        if candidate.rank_ratio > 0:
            hook = self._epoch_hook(stages.LOWRANK, monitor)
            with _timed(timings, stages.LOWRANK):
                base = stages.factorized_and_finetuned(self.task, self.cache, self.recipe, self.seed, base,
                                                       candidate.rank_ratio, distillation, hook)
            hits[stages.LOWRANK] = base.cache_hit
            if base.cache_hit and hook:
                hook(self.recipe.finetune_epochs, self.recipe.finetune_epochs, base.model)
        macs, params = stages.count_macs_and_params(base.model, self.task.train[0][:1])
        qat, qat_hits = None, []
        if candidate.qat:
            qat, qat_hits = stages.qat_trainer(self.task, self.cache, self.recipe, self.seed, base, distillation,
                                               self._epoch_hook(stages.QAT, monitor))
        runtime = serving_runtime(candidate.runtime)
        with _timed(timings, stages.QUANTIZE):
            if runtime.spec.converts:
                quantized = self._converted(runtime, base, candidate.bits, hits)
            else:
                quantized = quantize(base.model, candidate.bits, candidate.float_dtype, self.calibration, qat)
        if qat_hits:
            hits[stages.QAT] = qat_hits[0]
        return _built(runtime, quantized, macs, params, timings, hits)

    def _converted(self, runtime: ServingRuntime, base: StageResult, bits: int, hits: dict[str, bool]) -> QuantizedModel:
        """The runtime's own artifact, converted (and quantized) once per base model and bit
        width: exporters and converters take seconds, so it is a cached stage like training."""
        key = self.cache.key(runtime.name, base=base.key, bits=bits, calibration=len(self.calibration))
        buffers, hits[runtime.name] = self.cache.get_or_build(
            key, lambda: runtime.convert(base.model, bits, self.calibration))
        return self._wrapped_conversion(runtime, base.model, bits, buffers)

    @staticmethod
    def _wrapped_conversion(runtime: ServingRuntime, model: nn.Module, bits: int,
                            buffers: dict[str, torch.Tensor]) -> QuantizedModel:
        serving = runtime.from_buffers(buffers)
        return QuantizedModel(serving, runtime.quant_path(model, bits), state_dict_bytes(serving), simulated=False)

    def _architecture(
        self, candidate: Candidate, timings: dict[str, float], hits: dict[str, bool], monitor: AccuracyMonitor | None
    ) -> tuple[StageResult, Distillation | None]:
        """The teacher, or the distilled student, plus the distillation used to fine-tune it."""
        choice = candidate.student
        if choice is None:
            return self.teacher, None
        hook = self._epoch_hook(stages.DISTILL, monitor)
        with _timed(timings, stages.DISTILL):
            # Loaded only when the student is trained, not on a cache hit (the features are large).
            hints = (lambda: FeatureHints(self.teacher_features, choice.feature_weight)) if choice.feature_weight else None
            student = stages.distilled_student(
                self.task, self.cache, self.recipe, self.seed, choice, self.teacher, self.soft_targets, hints, hook
            )
        hits[stages.DISTILL] = student.cache_hit
        if student.cache_hit and hook:
            epochs = stages.student_epochs(choice, self.recipe)
            hook(epochs, epochs, student.model)
        return student, Distillation(self.soft_targets, choice.temperature, choice.alpha)

    def _epoch_hook(self, stage: str, monitor: AccuracyMonitor | None) -> EpochHook | None:
        if monitor is None:
            return None

        def report(epoch: int, epochs: int, model: nn.Module) -> None:
            monitor(f"{stage} {epoch}/{epochs}", evaluate_accuracy(model, self.task.val, self.task.metric))

        return report


def _built(runtime: ServingRuntime, quantized: QuantizedModel, macs: int, params: int, timings: dict[str, float],
           hits: dict[str, bool]) -> BuiltModel:
    return BuiltModel(serving=runtime.wrap(quantized.serving), quant_path=quantized.path,
                      simulated=quantized.simulated, model_bytes=quantized.model_bytes, params=params, macs=macs,
                      stage_seconds=timings, cache_hits=hits)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - start
