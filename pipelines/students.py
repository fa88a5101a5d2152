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

from slimsearch.evaluators.families import KNOWN_FAMILIES, layer_stack
from slimsearch.pipelines.pruning import PruningChoice, prune_channels
from slimsearch.pipelines.task import Task
from slimsearch.spaces import InvalidCandidate


def teacher_init_problem(teacher: nn.Module, width: float, depth: int, has_student_family: bool = True) -> str | None:
    """Why a student of ``width`` x ``depth`` cannot be cut from this teacher, or ``None``;
    the advice names only what this task can do (init scratch needs a student family)."""
    found = layer_stack(teacher)
    if found is None:
        instead = ("use space.student.init: [scratch]" if has_student_family else
                   "set space.student.distill: false (compress the teacher itself) or give the task a "
                   "student_architecture(width, depth) and use space.student.init: [scratch]")
        return (f"student.init teacher cuts a transformer's layer stack, and this teacher has no nn.ModuleList of "
                f"layers laid out like a known family ({KNOWN_FAMILIES}); {instead}")
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
    owner, attribute, layers = layer_stack(student)  # type: ignore[misc]
    keep = [index * len(layers) // depth for index in range(depth)]
    setattr(owner, attribute, nn.ModuleList(layers[index] for index in keep))
    for position, layer in enumerate(getattr(owner, attribute)):
        for module in layer.modules():  # decoder layers index their key/value cache by layer_idx
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    for module in student.modules():  # Hugging Face modules read the layer count from their config
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = depth
            if isinstance(getattr(config, "layer_types", None), list):
                config.layer_types = [config.layer_types[index] for index in keep]
    if width < 1:
        prune_channels(student, PruningChoice(round(1 - width, 6)), task)
    return student.train()
