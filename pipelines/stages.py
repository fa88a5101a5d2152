"""The slow, cacheable stages: teacher, teacher logits, distilled student, prune + fine-tune.

Each stage's output is a state dict (or tensor) in the :class:`StageCache`, keyed by
everything that determines it, so a student or pruned model that appears again in the
study is loaded instead of retrained. A pruned entry is loaded by cutting the base model
down to the cached layer shapes, so the cache stores plain tensors only, whatever
importance, scope or iterative schedule produced them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from slimsearch.pipelines.cache import StageCache
from slimsearch.pipelines.features import FeatureHints, stage_names, teacher_stage_outputs
from slimsearch.pipelines.lowrank import factorize
from slimsearch.pipelines.pruning import CHANNEL_MULTIPLE, PruningChoice, make_pruner, prune_step, prune_to_shapes
from slimsearch.pipelines.students import student_from_teacher
from slimsearch.pipelines.task import Task, check_teacher
from slimsearch.evaluators.accuracy import predict
from slimsearch.pipelines.training import Distillation, EpochHook, TrainingProgress, train_model
from slimsearch.spaces import InvalidCandidate, StudentChoice


# Stage names, one per stage: its stage-cache entries, its wall time (``seconds_<stage>``)
# and its cache hit (``cache_hit.<stage>``) in every trial's record. A serving runtime that
# converts the model caches its conversion under the runtime's name.
TEACHER = "teacher"
TEACHER_LOGITS = "teacher-logits"
TEACHER_FEATURES = "teacher-features"
DISTILL = "distill"
PRUNE_FINETUNE = "prune_finetune"
LOWRANK = "lowrank"
QAT = "qat"
QUANTIZE = "quantize"


@dataclass(frozen=True)
class TrainingRecipe:
    """Epoch budgets and optimiser settings shared by all stages."""

    teacher_epochs: int = 15
    distill_epochs: int = 10
    finetune_epochs: int = 3
    lr: float = 3e-3
    batch_size: int = 64


@dataclass
class StageResult:
    """A stage's model, the cache key it is stored under, and whether it came from cache."""

    model: nn.Module
    key: str
    cache_hit: bool


def checked_teacher(task: Task, seed: int) -> nn.Module:
    """The teacher as the task builds it -- the pretrained one, or ``teacher_architecture()``
    untrained -- after the teacher check; ``run`` and ``validate`` refuse the same tasks."""
    if task.pretrained_teacher is not None:
        pretrained = task.pretrained_teacher()
        check_teacher(task, pretrained, "pretrained")
        return pretrained
    architecture = task.teacher_architecture
    assert architecture is not None, "load_task refuses a task with neither teacher"
    model = _seeded(architecture, seed)
    check_teacher(task, model, "untrained")  # before spending the training time
    return model


def teacher(task: Task, cache: StageCache, recipe: TrainingRecipe, seed: int,
            progress: TrainingProgress | None = None) -> StageResult:
    """The trained teacher: the task's pretrained one, or trained once and cached (its
    batches and epochs reported to ``progress``, which may stop it)."""
    model = checked_teacher(task, seed)
    if task.pretrained_teacher is not None:
        return StageResult(model.eval(), f"pretrained-{task.cache_identity}", True)
    key = cache.key(TEACHER, task=task.cache_identity, seed=seed, epochs=recipe.teacher_epochs, lr=recipe.lr)
    state, hit = cache.get_or_build(
        key,
        lambda: train_model(
            model, task.train, recipe.teacher_epochs, seed=seed, lr=recipe.lr, batch_size=recipe.batch_size, regression=task.regression,
            on_epoch=progress.on_epoch if progress else None, on_batch=progress.on_batch if progress else None,
        ).state_dict(),
    )
    model.load_state_dict(state)
    check_teacher(task, model, "trained")
    return StageResult(model.eval(), key, hit)


def teacher_logits(task: Task, cache: StageCache, teacher_stage: StageResult) -> torch.Tensor:
    """Teacher logits on the training split, computed once per teacher."""
    logits, _ = cache.get_or_build(
        cache.key(TEACHER_LOGITS, teacher=teacher_stage.key),
        lambda: predict(teacher_stage.model, task.train[0]),
    )
    return logits


def teacher_features(task: Task, cache: StageCache, teacher_stage: StageResult) -> list[torch.Tensor]:
    """The teacher's stage outputs on the training split (feature distillation), once per teacher."""
    names = stage_names(teacher_stage.model)
    stacked, _ = cache.get_or_build(
        cache.key(TEACHER_FEATURES, teacher=teacher_stage.key, stages=names),
        lambda: {name: output for name, output in zip(names, teacher_stage_outputs(teacher_stage.model, task.train[0]))},
    )
    return [stacked[name] for name in names]


def distilled_student(
    task: Task,
    cache: StageCache,
    recipe: TrainingRecipe,
    seed: int,
    choice: StudentChoice,
    teacher_stage: StageResult,
    soft_targets: torch.Tensor,
    hints: Callable[[], FeatureHints] | None = None,
    on_epoch: EpochHook | None = None,
) -> StageResult:
    """The student ``choice`` describes, distilled for its budget (``choice.epochs``, else
    the recipe's) from the teacher's logits and, with ``hints``, its stage features
    (asked for only when the student is trained, not when it comes from the cache)."""
    extras = {"feature_weight": choice.feature_weight} if choice.feature_weight else {}
    if choice.init != "scratch":
        extras["init"] = choice.init
    key = cache.key(
        DISTILL,
        teacher=teacher_stage.key,
        width=choice.width,
        depth=choice.depth,
        temperature=choice.temperature,
        alpha=choice.alpha,
        epochs=student_epochs(choice, recipe),
        lr=recipe.lr,
        seed=seed,
        **extras,
    )
    model = _seeded(lambda: student_architecture(task, choice, teacher_stage.model), seed)
    distillation = Distillation(soft_targets, choice.temperature, choice.alpha)
    state, hit = cache.get_or_build(
        key,
        lambda: train_model(
            model,
            task.train,
            student_epochs(choice, recipe),
            seed=seed,
            lr=recipe.lr,
            batch_size=recipe.batch_size, regression=task.regression,
            distillation=distillation,
            hints=hints() if hints else None,
            on_epoch=on_epoch,
        ).state_dict(),
    )
    model.load_state_dict(state)
    return StageResult(model.eval(), key, hit)


def student_architecture(task: Task, choice: StudentChoice, teacher: nn.Module) -> nn.Module:
    """The untrained student: a member of the task's family, or cut from the teacher's layers."""
    if choice.init == "teacher":
        return student_from_teacher(teacher, choice.width, choice.depth, task)
    if task.student_architecture is None:
        raise InvalidCandidate("the task has no student_architecture; set space.student.init: [teacher]")
    return task.student_architecture(choice.width, choice.depth)


def student_epochs(choice: StudentChoice, recipe: TrainingRecipe) -> int:
    return choice.epochs or recipe.distill_epochs


def pruned_and_finetuned(
    task: Task,
    cache: StageCache,
    recipe: TrainingRecipe,
    seed: int,
    base: StageResult,
    pruning: PruningChoice,
    distillation: Distillation | None,
    on_epoch: EpochHook | None = None,
) -> StageResult:
    """Structured channel pruning (channels physically removed), a fine-tune after each of
    ``pruning.steps`` increments. A cache hit prunes a copy of ``base`` to the cached
    layer shapes (which channels go does not matter: the cached weights replace them)."""
    model = copy.deepcopy(base.model)
    key = cache.key(
        PRUNE_FINETUNE,
        base=base.key,
        ratio=pruning.ratio,
        importance=pruning.importance,
        scope=pruning.scope,
        steps=pruning.steps,
        channel_multiple=CHANNEL_MULTIPLE,  # a different rounding keeps other channel counts
        epochs=recipe.finetune_epochs,
        lr=recipe.lr,
        seed=seed,
        distill=None if distillation is None else [distillation.temperature, distillation.alpha],
    )

    def build() -> dict[str, torch.Tensor]:
        pruner = make_pruner(model, pruning, task, seed)
        for step in range(pruning.steps):
            prune_step(model, pruner, pruning, task)
            train_model(
                model,
                task.train,
                recipe.finetune_epochs,
                seed=seed + step,
                lr=recipe.lr / 3,
                batch_size=recipe.batch_size, regression=task.regression,
                distillation=distillation,
                on_epoch=_offset(on_epoch, step * recipe.finetune_epochs, pruning.steps * recipe.finetune_epochs),
            )
        return model.state_dict()

    state, hit = cache.get_or_build(key, build)
    if hit:
        prune_to_shapes(model, state, task.train[0][:1])
    model.load_state_dict(state)
    return StageResult(model.eval(), key, hit)


def factorized_and_finetuned(
    task: Task,
    cache: StageCache,
    recipe: TrainingRecipe,
    seed: int,
    base: StageResult,
    ratio: float,
    distillation: Distillation | None,
    on_epoch: EpochHook | None = None,
) -> StageResult:
    """``base`` with its Linear layers replaced by rank-``ratio`` SVD pairs, then fine-tuned
    (``recipe.finetune_epochs``). The factorised architecture follows from ``base`` and the
    ratio, so a cache hit rebuilds it the same way and loads the fine-tuned weights."""
    key = cache.key(LOWRANK, base=base.key, ratio=ratio, epochs=recipe.finetune_epochs, lr=recipe.lr, seed=seed,
                    distill=None if distillation is None else [distillation.temperature, distillation.alpha])
    model = factorize(copy.deepcopy(base.model), ratio, task)
    state, hit = cache.get_or_build(
        key,
        lambda: train_model(model, task.train, recipe.finetune_epochs, seed=seed, lr=recipe.lr / 3,
                            batch_size=recipe.batch_size, regression=task.regression, distillation=distillation, on_epoch=on_epoch).state_dict(),
    )
    model.load_state_dict(state)
    return StageResult(model.eval(), key, hit)


def qat_trainer(
    task: Task,
    cache: StageCache,
    recipe: TrainingRecipe,
    seed: int,
    base: StageResult,
    distillation: Distillation | None,
    on_epoch: EpochHook | None = None,
) -> tuple[Callable[[nn.Module], None], list[bool]]:
    """Quantization-aware fine-tuning of a prepared model (``recipe.finetune_epochs``), cached
    like the other training stages; the list receives whether it was a cache hit."""
    key = cache.key(QAT, base=base.key, epochs=recipe.finetune_epochs, lr=recipe.lr, seed=seed,
                    distill=None if distillation is None else [distillation.temperature, distillation.alpha])
    hits: list[bool] = []

    def train(prepared: nn.Module) -> None:
        state, hit = cache.get_or_build(
            key,
            lambda: train_model(prepared, task.train, recipe.finetune_epochs, seed=seed, lr=recipe.lr / 10,
                                batch_size=recipe.batch_size, regression=task.regression, distillation=distillation,
                                on_epoch=on_epoch).state_dict(),
        )
        prepared.load_state_dict(state)
        hits.append(hit)

    return train, hits


def _offset(on_epoch: EpochHook | None, done: int, total: int) -> EpochHook | None:
    """Number the epochs of every fine-tune step on one scale (``finetune 4/6``)."""
    if on_epoch is None:
        return None
    return lambda epoch, _, model: on_epoch(done + epoch, total, model)


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Construct a model with a seeded initialisation, so a cache key fully determines it."""
    torch.manual_seed(seed)
    return build()


def count_macs_and_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates for one example and parameter count, via torch-pruning's counter."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)
