"""Structured pruning with torch-pruning's dependency graph, aware of attention heads.

Channels are physically removed (params, MACs and latency fall). What is never cut:

* the classifier head, the task's ``protected_modules`` and a model's ``unprunable`` names;
* for models with attention, the residual width: it couples every block, so the
  embeddings (``nn.Embedding``) and ``nn.MultiheadAttention`` modules are kept whole,
  which makes torch-pruning leave their whole group alone;
* recurrent layers (LSTM, GRU, RNN) and the embeddings feeding them: torch-pruning's
  recurrent pruner broke the forward of a one-layer LSTM token classifier (IndexError in
  the embedding lookup), while with both kept whole the Linear layers after them prune
  cleanly.

Kept channel counts are rounded to the nearest multiple of ``CHANNEL_MULTIPLE`` (layers
narrower than that keep the plain count): onnxruntime's blocked convolutions need it. The
digits teacher pruned to (26, 51, 102) channels served 2.7x slower at 2 threads than at the
aligned (24, 48, 104), and 1.5x slower than unpruned, despite a third fewer MACs
(onnxruntime fp32, batch 64, AMD EPYC AVX2, idle, 2026-11-29); torch's latency did not
care. A ratio that removes nothing (every layer it could cut is kept whole, or too narrow
for the ratio to take a channel once aligned) is rejected rather than measured as a
pruned model.

Transformers of a known family (``evaluators.families``: BERT, RoBERTa, DistilBERT, GPT-2,
ViT, LLaMA-style, ...) are pruned by ``head_pruning`` instead: whole attention heads and
FFN channels of every layer, the residual width kept. Any other model goes through
torch-pruning's dependency graph; :func:`pruning_problem` prunes an untrained copy once
before any training, so an architecture that cannot be pruned safely is rejected with
the reason.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch_pruning as tp
from torch import nn

from slimsearch.evaluators.families import KNOWN_FAMILIES, transformer_layers, user_model_name
from slimsearch.pipelines.head_pruning import LayerPruner, restore_shapes
from slimsearch.pipelines.task import Task
from slimsearch.pipelines.training import task_loss
from slimsearch.spaces import InvalidCandidate


@dataclass(frozen=True)
class PruningChoice:
    """How much to prune and how: importance, uniform or global ratio, one-shot or iterative."""

    ratio: float
    importance: str = "l1"
    scope: str = "uniform"
    steps: int = 1


IMPORTANCE: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "random": lambda: tp.importance.RandomImportance(),
}
TAYLOR_BATCH = 256
CHANNEL_MULTIPLE = 8
"""Kept channel counts of a layer wider than this are a multiple of it (8 fp32 lanes of AVX2)."""
RESTORABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)
"""Layers whose output channels :func:`prune_to_shapes` cuts back to a cached pruned model's."""


def prune_channels(model: nn.Module, pruning: PruningChoice, task: Task, seed: int = 0) -> nn.Module:
    """Prune ``model`` in place, all steps at once (no fine-tuning between them)."""
    pruner = make_pruner(model, pruning, task, seed)
    for _ in range(pruning.steps):
        prune_step(model, pruner, pruning, task)
    return model


def make_pruner(model: nn.Module, pruning: PruningChoice, task: Task, seed: int) -> tp.pruner.MetaPruner | LayerPruner:
    """The pruner for this choice: by heads and FFN channels for a known transformer family,
    else torch-pruning's dependency-graph pruner (see the module docstring)."""
    model.eval()
    if transformer_layers(model):
        return LayerPruner(model, pruning.ratio, pruning.importance, pruning.scope, pruning.steps, seed)
    unprunable = set(task.protected_modules) | set(getattr(model, "unprunable", ()))
    has_attention = any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    protected = [
        module
        for name, module in model.named_modules()
        if name in unprunable
        or (isinstance(module, nn.Linear) and module.out_features == task.num_classes)
        or (has_attention and isinstance(module, (nn.Embedding, nn.MultiheadAttention)))
        or (recurrent and isinstance(module, (nn.Embedding, nn.RNNBase)))
    ]
    torch.manual_seed(seed)  # the random baseline is reproducible, so its cache entry is too
    with warnings.catch_warnings():
        # Free parameters (e.g. learned positions) are pruned along with their coupled
        # layers, which is what we want; torch-pruning warns about each of them.
        warnings.filterwarnings("ignore", message="Unwrapped parameters")
        pruner = tp.pruner.MetaPruner(
            model,
            task.train[0][:1],
            importance=IMPORTANCE[pruning.importance](),
            global_pruning=pruning.scope == "global",
            pruning_ratio=pruning.ratio,
            iterative_steps=pruning.steps,
            ignored_layers=protected,
            round_to=CHANNEL_MULTIPLE,
        )
    # torch-pruning rounds the kept count *down* (8 channels at ratio 0.2 keep 0); ours
    # rounds to the nearest multiple and leaves narrow layers alone.
    pruner._round_to = aligned_cut  # type: ignore[method-assign]
    return pruner


def aligned_cut(n_pruned: int, current: int, multiple: int) -> int:
    """How many of ``current`` channels to cut so that the kept count is the multiple of
    ``multiple`` nearest to what cutting ``n_pruned`` keeps, never below ``multiple``; a
    layer no wider than ``multiple`` is cut by ``n_pruned`` as asked."""
    if current <= multiple:
        return n_pruned
    kept = max(multiple, multiple * round((current - n_pruned) / multiple))
    return max(0, current - kept)


def prune_step(model: nn.Module, pruner: tp.pruner.MetaPruner | LayerPruner, pruning: PruningChoice, task: Task) -> None:
    """One increment of the pruning schedule; a layer left with no channels makes the
    candidate invalid (global pruning can empty a layer a uniform ratio would not)."""
    if pruning.importance == "taylor":  # |w * dL/dw| needs the gradient of the task loss
        model.zero_grad()
        inputs, labels = task.train[0][:TAYLOR_BATCH], task.train[1][:TAYLOR_BATCH]
        task_loss(model(inputs), labels, task.regression).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    for name, module in model.named_modules():
        if min(getattr(module, "out_channels", 1), getattr(module, "out_features", 1)) < 1:
            raise InvalidCandidate(f"pruning ratio {pruning.ratio} ({pruning.scope}) leaves layer '{name}' "
                                   "with no channels")


def prune_to_shapes(model: nn.Module, state: dict[str, torch.Tensor], example: torch.Tensor) -> None:
    """Remove output channels of ``model``'s Linear, Conv (1-3 d) and Embedding layers (and,
    through torch-pruning's dependency graph, everything coupled to them) until they match
    ``state`` (the cached weights replace the kept ones). Every layer kind the pruner can
    cut is restored here, or a cached pruned model of that kind would not load (a Conv1d
    net did not); transformers of a known family lose trailing heads and FFN channels."""
    if transformer_layers(model):
        restore_shapes(model, state)
        return
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    for name, module in model.named_modules():
        cached = state.get(f"{name}.weight")
        if cached is None or not isinstance(module, RESTORABLE):
            continue
        pruner = graph.get_pruner_of_module(module)
        target = cached.shape[1] if isinstance(module, nn.Embedding) else cached.shape[0]  # embedding_dim is dim 1
        current = pruner.get_out_channels(module)
        if target < current:
            graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(target, current))).prune()


def pruning_problem(model: nn.Module, pruning: PruningChoice, task: Task) -> str | None:
    """Why pruning ``model`` this way would break it, found on a copy before any training
    (it must still run on a validation batch with the same output shape), or ``None``."""
    trial = copy.deepcopy(model).eval()
    rows = task.val[0][:2]
    size = sum(p.numel() for p in trial.parameters())
    try:
        with torch.no_grad():
            expected = trial(rows).shape
        prune_channels(trial, PruningChoice(pruning.ratio, "l1", pruning.scope, pruning.steps), task)
        with torch.no_grad():
            shape = trial(rows).shape
    except InvalidCandidate as exc:
        return str(exc)
    except Exception as exc:  # a view/reshape the dependency graph could not follow
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return (f"pruning {user_model_name(model)} at ratio {pruning.ratio:g} breaks its forward ({type(exc).__name__}: "
                f"{first}); attention is pruned by whole heads only in layers laid out like a known family "
                f"({KNOWN_FAMILIES}); list the layers that must stay whole in an 'unprunable' attribute of the "
                "model, or set space.prune.high: 0")
    if shape != expected:
        return f"pruning {user_model_name(model)} at ratio {pruning.ratio:g} changes its output shape {tuple(expected)} -> {tuple(shape)}"
    if sum(p.numel() for p in trial.parameters()) == size:
        return (f"pruning {user_model_name(model)} at ratio {pruning.ratio:g} removes nothing (its layers are kept whole "
                f"or too narrow for this ratio once kept channels are multiples of {CHANNEL_MULTIPLE}); "
                "set space.prune.low higher or space.prune.high: 0")
    return None
