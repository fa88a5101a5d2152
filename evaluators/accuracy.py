"""Accuracy of a (compressed) model on a data split, with the task's metric."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


@torch.inference_mode()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits for ``inputs`` in evaluation mode, batched to bound memory."""
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def evaluate_accuracy(
    model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], metric: Callable[[torch.Tensor, torch.Tensor], float]
) -> float:
    """The metric of ``model`` on ``split``; NaN logits give NaN, never a silent number."""
    logits = predict(model, split[0]).float()
    if not torch.isfinite(logits).all():
        return float("nan")
    return float(metric(logits, split[1]))
