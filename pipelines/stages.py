"""The slow, cacheable stages: teacher, teacher logits, distilled student, prune + fine-tune.

Each stage's output is a state dict (or tensor) in the :class:`StageCache`, keyed by
everything that determines it, so a student or pruned model that appears again in the
study is loaded instead of retrained. Pruning is re-applied on load (it is
deterministic and takes milliseconds) so the cache stores plain tensors only.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from slimsearch.pipelines.cache import StageCache
from slimsearch.pipelines.task import Task
from slimsearch.evaluators.accuracy import predict
from slimsearch.pipelines.training import Distillation, EpochHook, train_model
from slimsearch.spaces import InvalidCandidate, StudentChoice


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


def teacher(task: Task, cache: StageCache, recipe: TrainingRecipe, seed: int) -> StageResult:
    """The trained teacher: the task's pretrained one, or trained once and cached."""
    if task.pretrained_teacher is not None:
        return StageResult(task.pretrained_teacher().eval(), f"pretrained-{task.cache_identity}", True)
    key = cache.key("teacher", task=task.cache_identity, seed=seed, epochs=recipe.teacher_epochs, lr=recipe.lr)
    model = _seeded(task.teacher_architecture, seed)
    state, hit = cache.get_or_build(
        key,
        lambda: train_model(
            model, task.train, recipe.teacher_epochs, seed=seed, lr=recipe.lr, batch_size=recipe.batch_size
        ).state_dict(),
    )
    model.load_state_dict(state)
    return StageResult(model.eval(), key, hit)


def teacher_logits(task: Task, cache: StageCache, teacher_stage: StageResult) -> torch.Tensor:
    """Teacher logits on the training split, computed once per teacher."""
    logits, _ = cache.get_or_build(
        cache.key("teacher-logits", teacher=teacher_stage.key),
        lambda: predict(teacher_stage.model, task.train[0]),
    )
    return logits


def distilled_student(
    task: Task,
    cache: StageCache,
    recipe: TrainingRecipe,
    seed: int,
    choice: StudentChoice,
    teacher_stage: StageResult,
    soft_targets: torch.Tensor,
    on_epoch: EpochHook | None = None,
) -> StageResult:
    key = cache.key(
        "student",
        teacher=teacher_stage.key,
        width=choice.width,
        depth=choice.depth,
        temperature=choice.temperature,
        alpha=choice.alpha,
        epochs=recipe.distill_epochs,
        lr=recipe.lr,
        seed=seed,
    )
    model = _seeded(lambda: task.student_architecture(choice.width, choice.depth), seed)
    distillation = Distillation(soft_targets, choice.temperature, choice.alpha)
    state, hit = cache.get_or_build(
        key,
        lambda: train_model(
            model,
            task.train,
            recipe.distill_epochs,
            seed=seed,
            lr=recipe.lr,
            batch_size=recipe.batch_size,
            distillation=distillation,
            on_epoch=on_epoch,
        ).state_dict(),
    )
    model.load_state_dict(state)
    return StageResult(model.eval(), key, hit)


def pruned_and_finetuned(
    task: Task,
    cache: StageCache,
    recipe: TrainingRecipe,
    seed: int,
    base: StageResult,
    ratio: float,
    distillation: Distillation | None,
    on_epoch: EpochHook | None = None,
) -> StageResult:
    """Structured channel pruning (channels physically removed) followed by a short fine-tune."""
    model = prune_channels(copy.deepcopy(base.model), ratio, task)
    key = cache.key(
        "pruned",
        base=base.key,
        ratio=ratio,
        epochs=recipe.finetune_epochs,
        lr=recipe.lr,
        seed=seed,
        distill=None if distillation is None else [distillation.temperature, distillation.alpha],
    )
    state, hit = cache.get_or_build(
        key,
        lambda: train_model(
            model,
            task.train,
            recipe.finetune_epochs,
            seed=seed,
            lr=recipe.lr / 3,
            batch_size=recipe.batch_size,
            distillation=distillation,
            on_epoch=on_epoch,
        ).state_dict(),
    )
    model.load_state_dict(state)
    return StageResult(model.eval(), key, hit)


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Construct a model with a seeded initialisation, so a cache key fully determines it."""
    torch.manual_seed(seed)
    return build()


def prune_channels(model: nn.Module, ratio: float, task: Task) -> nn.Module:
    """L1-magnitude structured pruning with torch-pruning's dependency graph.

    The classifier head, any module the task protects and any the model lists in an
    ``unprunable`` attribute (names that depend on its depth, e.g. a Transformer's
    residual-stream layers) keep their outputs. A layer that would lose all its channels
    makes the candidate invalid.
    """
    model.eval()
    example = task.train[0][:1]
    unprunable = set(task.protected_modules) | set(getattr(model, "unprunable", ()))
    protected = [
        module
        for name, module in model.named_modules()
        if name in unprunable or (isinstance(module, nn.Linear) and module.out_features == task.num_classes)
    ]
    with warnings.catch_warnings():
        # Free parameters (e.g. learned positions) are pruned along with their coupled
        # layers, which is what we want; torch-pruning warns about each of them.
        warnings.filterwarnings("ignore", message="Unwrapped parameters")
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=ratio,
            ignored_layers=protected,
        )
    pruner.step()
    for name, module in model.named_modules():
        if min(getattr(module, "out_channels", 1), getattr(module, "out_features", 1)) < 1:
            raise InvalidCandidate(f"pruning ratio {ratio} leaves layer '{name}' with no channels")
    return model


def count_macs_and_params(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates for one example and parameter count, via torch-pruning's counter."""
    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)
