"""Students initialised from the teacher (DistilBERT-style), for transformers.

Training a transformer student from scratch is hopeless in an overnight budget; the
field starts it from the teacher instead. :func:`student_from_teacher` keeps ``depth``
of the teacher's encoder layers, evenly spaced (6 -> 3 keeps layers 0, 2, 4, as
DistilBERT does), then cuts every kept layer's attention heads and feed-forward width to
``width`` of the teacher's with the same head-aware structured pruning the search uses
(L1 magnitude: the heads and channels that carry the most weight stay). Distillation
then trains it as it trains any student.
"""

from __future__ import annotations

import copy

from torch import nn

from slimsearch.pipelines.pruning import PruningChoice, attention_projections, prune_channels
from slimsearch.pipelines.task import Task
from slimsearch.spaces import InvalidCandidate


def encoder_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList] | None:
    """``(owner, attribute, layers)`` of the model's stack of attention layers: the longest
    ``nn.ModuleList`` whose every entry holds head-aware attention, or ``None``."""
    best = None
    for owner in model.modules():
        for attribute, child in owner.named_children():
            if (isinstance(child, nn.ModuleList) and len(child) > 0
                    and all(attention_projections(layer) for layer in child)
                    and (best is None or len(child) > len(best[2]))):
                best = (owner, attribute, child)
    return best


def teacher_init_problem(teacher: nn.Module, width: float, depth: int) -> str | None:
    """Why a student of ``width`` x ``depth`` cannot be cut from this teacher, or ``None``."""
    found = encoder_layers(teacher)
    if found is None:
        return ("student.init teacher needs a transformer teacher whose layers are an nn.ModuleList of "
                "Hugging Face-style attention blocks (query/key/value + num_attention_heads); use init scratch")
    if depth > len(found[2]):
        return f"student.init teacher: depth {depth} is more than the teacher's {len(found[2])} layers"
    if width > 1:
        return f"student.init teacher: width {width:g} is wider than the teacher (at most 1)"
    return None


def student_from_teacher(teacher: nn.Module, width: float, depth: int, task: Task) -> nn.Module:
    """A copy of ``teacher`` with ``depth`` of its layers and ``width`` of its heads/FFN."""
    if problem := teacher_init_problem(teacher, width, depth):
        raise InvalidCandidate(problem)
    student = copy.deepcopy(teacher)
    owner, attribute, layers = encoder_layers(student)  # type: ignore[misc]
    keep = [index * len(layers) // depth for index in range(depth)]
    setattr(owner, attribute, nn.ModuleList(layers[index] for index in keep))
    for module in student.modules():  # Hugging Face modules read the layer count from their config
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = depth
    if width < 1:
        prune_channels(student, PruningChoice(round(1 - width, 6)), task)
    return student.train()
