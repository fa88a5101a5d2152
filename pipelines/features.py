"""Intermediate-feature distillation (FitNets-style hints) where teacher and student
expose matching stages.

A model exposes its stages with a ``feature_stages()`` method returning, in order, the
names of the submodules whose outputs are its stage features (both built-in families
do). Student stage ``i`` learns to match teacher stage ``i`` -- in the built-in families
the same resolution -- through a learned projection of the student's channels onto the
teacher's (1x1 convolution for feature maps, linear for token features). Projections
exist only while the student trains, so the served model is unchanged. The teacher's
stage outputs are computed once per teacher and cached, like its logits.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from slimsearch.spaces import InvalidCandidate


@dataclass(frozen=True)
class FeatureHints:
    """The teacher's stage outputs for the training rows, and the weight of the hint loss."""

    teacher_features: list[torch.Tensor]
    weight: float


def stage_names(model: nn.Module) -> list[str]:
    """The model's feature stages, or an InvalidCandidate saying how to expose them."""
    stages = getattr(model, "feature_stages", None)
    if not callable(stages):
        raise InvalidCandidate(f"{type(model).__name__} has no feature_stages() method, so feature distillation "
                               "cannot match its stages; set space.student.feature_weight to [0.0] or add the method")
    return list(stages())


@contextmanager
def recorded_stages(model: nn.Module, names: list[str]) -> Iterator[list[torch.Tensor]]:
    """While open, each forward pass of ``model`` leaves its stage outputs in the yielded list."""
    outputs: list[torch.Tensor] = []
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(lambda _m, _i, out: outputs.append(out)) for name in names]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def teacher_stage_outputs(teacher: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> list[torch.Tensor]:
    """Every stage output of the teacher for ``inputs``, one tensor per stage."""
    names = stage_names(teacher)
    per_stage: list[list[torch.Tensor]] = [[] for _ in names]
    teacher.eval()
    with recorded_stages(teacher, names) as outputs:
        for start in range(0, len(inputs), batch_size):
            outputs.clear()
            teacher(inputs[start : start + batch_size])
            for stage, output in zip(per_stage, outputs):
                stage.append(output.clone())
    return [torch.cat(stage) for stage in per_stage]


class HintLoss(nn.Module):
    """Mean squared error between projected student stages and the teacher's, averaged over stages."""

    def __init__(self, student: nn.Module, hints: FeatureHints, example: torch.Tensor):
        super().__init__()
        self.names = stage_names(student)[: len(hints.teacher_features)]
        self.hints = hints
        with torch.no_grad(), recorded_stages(student, self.names) as outputs:
            student.eval()(example)
        self.projections = nn.ModuleList(
            _projection(s, t[:1], name) for s, t, name in zip(outputs, hints.teacher_features, self.names)
        )

    @contextmanager
    def watching(self, student: nn.Module) -> Iterator[list[torch.Tensor]]:
        with recorded_stages(student, self.names) as outputs:
            yield outputs

    def forward(self, student_outputs: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        losses = [F.mse_loss(project(s), t[rows])
                  for project, s, t in zip(self.projections, student_outputs, self.hints.teacher_features)]
        return self.hints.weight * torch.stack(losses).mean()


def _projection(student: torch.Tensor, teacher: torch.Tensor, name: str) -> nn.Module:
    maps = student.dim() == 4  # (batch, channels, height, width); else (batch, tokens, features)
    same_grid = student.shape[2:] == teacher.shape[2:] if maps else student.shape[1] == teacher.shape[1]
    if student.dim() != teacher.dim() or student.dim() not in (3, 4) or not same_grid:
        raise InvalidCandidate(f"student stage '{name}' has shape {tuple(student.shape[1:])}, the teacher's "
                               f"{tuple(teacher.shape[1:])}: feature distillation needs the same resolution")
    if maps:
        return nn.Conv2d(student.shape[1], teacher.shape[1], 1, bias=False)
    return nn.Linear(student.shape[-1], teacher.shape[-1], bias=False)
