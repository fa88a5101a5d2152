"""Models whose forward returns more than logits, used as they come.

A Hugging Face ``...ForSequenceClassification`` returns a ``ModelOutput`` (``.logits``,
maybe hidden states), many models return a tuple whose first element is the logits or a
dict with a ``"logits"`` entry.
Training, pruning, tracing, ONNX export and the serving probe all need one
``(rows, classes)`` tensor, so such a model is wrapped in :class:`LogitsOf` when it is
built -- decided once per built model by running it on two validation rows -- and its
state, caches and exports are those of the wrapper. Models that already return a tensor
are left exactly as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimsearch.pipelines.task import Task, map_models


class ModelWrapper(nn.Module):
    """A user's model behind an adapter (``self.model``) that keeps its named feature stages."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def feature_stages(self) -> list[str]:
        """The wrapped model's stages, if it names any (feature distillation)."""
        inner = getattr(self.model, "feature_stages", None)
        if not callable(inner):
            raise AttributeError("the wrapped model has no feature_stages()")
        return [f"model.{name}" for name in inner()]


class LogitsOf(ModelWrapper):
    """``model`` with its output reduced to the logits tensor."""

    def forward(self, batch: torch.Tensor) -> torch.Tensor:  # one tensor: several inputs arrive packed
        return logits_of(self.model(batch))


def logits_of(output: Any) -> Any:
    """The logits in ``output``: itself if a tensor, else ``.logits`` (or a dict's
    ``"logits"``), else a tuple's first tensor; anything else is returned as is (the
    teacher check names the problem)."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return output


def with_logits_outputs(task: Task) -> Task:
    """``task`` whose model factories wrap, where needed, what they build in :class:`LogitsOf`."""
    rows = task.val[0][:2]
    return map_models(task, lambda model: _returning_logits(model, rows))


def _returning_logits(model: nn.Module, rows: torch.Tensor) -> nn.Module:
    training = model.training
    try:
        with torch.no_grad():
            output = model.eval()(rows)
    except Exception:  # noqa: BLE001 - the teacher check (or the trial) reports the model's own error
        return model.train(training)
    model.train(training)
    return model if isinstance(output, torch.Tensor) else LogitsOf(model)
