"""Low-rank factorisation: each Linear layer replaced by two thinner ones from its truncated SVD.

``W (out x in) ~= (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)`` keeps the ``r`` largest singular
values, ``r = max(1, round(ratio * min(out, in)))``; the pair costs ``r * (in + out)``
weights instead of ``in * out``, which pays only while ``r < in * out / (in + out)``. A rank
that does not pay is still built and measured (more parameters, maybe slower), never
assumed away. The pair is an ``nn.Sequential`` of two ``nn.Linear``, so tracing, ONNX,
OpenVINO and dynamic int8 take it like any Linear. The classifier head and the task's
protected modules keep their weights; the factorised model is fine-tuned afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.pipelines.task import Task


def rank_for(layer: nn.Linear, ratio: float) -> int:
    return max(1, round(ratio * min(layer.in_features, layer.out_features)))


def factorizable(model: nn.Module, task: Task) -> list[str]:
    """Names of the Linear layers a factorisation would replace (not the head, not protected ones)."""
    protected = set(task.protected_modules)  # shapes at the layer's ends stay: residual layers qualify too
    return [name for name, module in model.named_modules()
            if type(module) is nn.Linear and name not in protected and module.out_features != task.num_classes
            and min(module.in_features, module.out_features) > 1]


def factorize(model: nn.Module, ratio: float, task: Task) -> nn.Module:
    """Replace ``model``'s factorisable Linear layers in place by their rank-``ratio`` SVD pairs."""
    for name in factorizable(model, task):
        owner_name, _, attribute = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        setattr(owner, attribute, _low_rank_pair(getattr(owner, attribute), rank_for(getattr(owner, attribute), ratio)))
    return model


def _low_rank_pair(layer: nn.Linear, rank: int) -> nn.Sequential:
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(layer.weight.detach().float(), full_matrices=False)
        root = s[:rank].sqrt()
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)
