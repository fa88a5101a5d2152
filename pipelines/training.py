"""One training loop for teacher training, distillation and post-pruning fine-tuning.

Distillation uses teacher logits computed once per teacher and passed in as a tensor:
running the teacher on every batch made distillation ~8x slower on the target CPU.
The loss is ``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)``,
so ``alpha = 0`` is plain supervised training with the same budget. A regression task
trains with ``(1 - alpha) * MSE(targets) + alpha * MSE(teacher outputs)`` (output
matching: there are no class probabilities to soften, so the temperature does not apply). Feature hints
(``hints``) add a weighted loss on intermediate stages.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from slimsearch.pipelines.features import FeatureHints, HintLoss
from slimsearch.pipelines.task import Split


EpochHook = Callable[[int, int, nn.Module], None]
"""Called after each epoch with ``(epoch, epochs, model)`` (model in eval mode); raising
stops the training (early stopping of a hopeless trial)."""
BatchHook = Callable[[float], None]
"""Called after each batch with its loss; raising stops the training within one batch
(a stop request during a long teacher training)."""


class TrainingProgress(Protocol):
    """Where a long training (the teacher's) reports its batches and epochs."""

    def on_batch(self, loss: float) -> None: ...

    def on_epoch(self, epoch: int, epochs: int, model: nn.Module) -> None: ...


@dataclass(frozen=True)
class Distillation:
    """Soft targets for the training set (aligned with its rows) and how to weigh them."""

    teacher_logits: torch.Tensor
    temperature: float
    alpha: float


def train_model(
    model: nn.Module,
    data: Split,
    epochs: int,
    *,
    seed: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    distillation: Distillation | None = None,
    hints: FeatureHints | None = None,
    on_epoch: EpochHook | None = None,
    on_batch: BatchHook | None = None,
    regression: bool = False,
) -> nn.Module:
    """Train in place with AdamW + cosine schedule; deterministic for a given seed. With
    ``hints``, student stages also learn to match the teacher's (through projections
    trained alongside and then dropped)."""
    inputs, labels = data
    if epochs <= 0:
        return model.eval()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hint_loss = HintLoss(model, hints, inputs[:2]) if hints is not None and hints.weight > 0 else None
    trained = [*model.parameters(), *(hint_loss.parameters() if hint_loss else [])]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(labels) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    model.train()
    with hint_loss.watching(model) if hint_loss else nullcontext([]) as stage_outputs:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(labels), batch_size):
                batch = order[start : start + batch_size]
                stage_outputs.clear()
                logits = model(inputs[batch])
                loss = task_loss(logits, labels[batch], regression, distillation, batch)
                if hint_loss is not None:
                    loss = loss + hint_loss(stage_outputs, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if on_batch is not None:
                    on_batch(float(loss.detach()))
            if on_epoch is not None:
                on_epoch(epoch, epochs, model.eval())
                model.train()
    return model.eval()


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool,
              distillation: Distillation | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of one batch (see the module docstring); ``rows`` index the
    distillation targets."""
    if regression:
        hard = F.mse_loss(logits.reshape(labels.shape), labels)
    else:
        hard = F.cross_entropy(logits, labels)
    if distillation is None or distillation.alpha == 0.0:
        return hard
    if regression:
        soft = F.mse_loss(logits, distillation.teacher_logits[rows])
        return (1.0 - distillation.alpha) * hard + distillation.alpha * soft
    t = distillation.temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(distillation.teacher_logits[rows] / t, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    return (1.0 - distillation.alpha) * hard + distillation.alpha * soft
