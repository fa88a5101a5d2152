"""Structured pruning of transformer layers: whole attention heads and FFN channels.

A layer of a known family (``evaluators.families``) loses whole heads -- key/value head
groups where a model shares keys and values across query heads (LLaMA-style) -- and
feed-forward channels; the residual width, the embeddings and everything outside the
layer stack are kept, because the residual stream couples every layer. Rows of the
query/key/value layers (the three blocks of a fused ``c_attn``/``qkv`` layer), columns
of the attention output, rows of the FFN input layers and columns of the FFN output are
sliced directly: torch-pruning's dependency graph could not follow every family's
attention (it failed on GPT-2's fused projection and cut DistilBERT's residual width),
while the layout says exactly which slices belong together. The module's head count and
projection width are updated afterwards; every family's forward reads the kept head size.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.evaluators.families import TransformerLayer, describe, named_transformer_layers

POWER = {"l1": 1, "l2": 2, "taylor": 1}
"""Each importance criterion as the power of |weight| (taylor: of |weight * gradient|) summed over a slice."""


class LayerPruner:
    """Prunes every transformer layer of a model by heads and FFN channels, in ``steps``
    increments of the ratio (the interface of torch-pruning's pruners: ``step()``)."""

    def __init__(self, model: nn.Module, ratio: float, importance: str, scope: str, steps: int, seed: int):
        self.model = model
        self.ratio, self.importance, self.scope, self.steps = ratio, importance, scope, steps
        self.generator = torch.Generator().manual_seed(seed)
        layers = named_transformer_layers(model)
        self.start = {name: (layer.key_value_heads, _ffn_width(layer)) for name, layer in layers}
        self.done = 0

    def step(self) -> None:
        self.done += 1
        fraction = self.ratio * self.done / self.steps
        layers = named_transformer_layers(self.model)
        head_keep = self._choose([self._head_scores(layer) for _, layer in layers],
                                 [self.start[name][0] for name, _ in layers], fraction)
        ffn_keep = self._choose([self._ffn_scores(layer) for _, layer in layers],
                                [self.start[name][1] for name, _ in layers], fraction)
        for (_, layer), heads, channels in zip(layers, head_keep, ffn_keep):
            keep_slices(layer, heads, channels)

    def _value(self, linear: nn.Linear) -> torch.Tensor:
        """What the criterion weighs: the weight, or weight x gradient for taylor."""
        weight = linear.weight.detach()
        return weight * linear.weight.grad if self.importance == "taylor" and linear.weight.grad is not None else weight

    def _scores(self, pieces: list[torch.Tensor], count: int) -> torch.Tensor:
        """Per-slice score summed over ``pieces`` (each ``(count, ...)``: one row per slice)."""
        if self.importance == "random":
            return torch.rand(count, generator=self.generator)
        power = POWER[self.importance]
        return sum(piece.abs().pow(power).reshape(count, -1).sum(dim=1) for piece in pieces)  # type: ignore[return-value]

    def _head_scores(self, layer: TransformerLayer) -> torch.Tensor:
        pieces = [self._value(linear)[first:first + rows] for linear, first, rows in layer.row_slices()]
        pieces.append(self._value(layer.part(layer.layout.output)).t())
        return self._scores(pieces, layer.key_value_heads)

    def _ffn_scores(self, layer: TransformerLayer) -> torch.Tensor:
        pieces = [self._value(layer.part(path)) for path in layer.layout.ffn_in]
        pieces.append(self._value(layer.part(layer.layout.ffn_out)).t())
        return self._scores(pieces, _ffn_width(layer))

    def _choose(self, scores: list[torch.Tensor], start: list[int], fraction: float) -> list[torch.Tensor]:
        """Indices to keep per layer: the highest scores, ``start - int(start * fraction)``
        per layer (uniform) or the same total across layers by score relative to each
        layer's mean (global); every layer keeps at least one."""
        if self.scope != "global":
            return [_top(s, max(1, n - int(n * fraction))) for s, n in zip(scores, start)]
        relative = torch.cat([s / s.mean().clamp(min=1e-12) for s in scores])
        total = max(len(scores), sum(start) - int(sum(start) * fraction))
        threshold = relative.sort(descending=True).values[total - 1]
        return [_top(s, max(1, int(((s / s.mean().clamp(min=1e-12)) >= threshold).sum()))) for s in scores]


def restore_shapes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Cut ``model``'s transformer layers to the head and FFN counts of a cached pruned
    state (the first ones: the cached weights replace them)."""
    for name, layer in named_transformer_layers(model):
        prefix = f"{name}." if name else ""
        query = state.get(f"{prefix}{layer.layout.projections[0]}.weight")
        ffn = state.get(f"{prefix}{layer.layout.ffn_in[0]}.weight")
        if query is None or ffn is None:
            continue
        rows_per_group = query.shape[0] // (3 if layer.layout.fused else 1) // (layer.heads // layer.key_value_heads)
        keep_slices(layer, torch.arange(rows_per_group // layer.head_dim), torch.arange(ffn.shape[0]))


def keep_slices(layer: TransformerLayer, head_groups: torch.Tensor, channels: torch.Tensor) -> None:
    """Keep only ``head_groups`` (key/value head groups) and FFN ``channels`` of ``layer``."""
    head_groups, channels = head_groups.sort().values, channels.sort().values
    per_group = layer.heads // layer.key_value_heads
    query_rows = _expand(head_groups, per_group * layer.head_dim)
    kv_rows = _expand(head_groups, layer.head_dim)
    slices = layer.row_slices()
    if layer.layout.fused:
        fused, _, _ = slices[0]
        (_, k_first, _), (_, v_first, _) = slices[1], slices[2]
        _keep_rows(fused, torch.cat([query_rows, kv_rows + k_first, kv_rows + v_first]))
    else:
        for (projection, _, _), rows in zip(slices, (query_rows, kv_rows, kv_rows)):
            _keep_rows(projection, rows)
    _keep_columns(layer.part(layer.layout.output), query_rows)
    for path in layer.layout.ffn_in:
        _keep_rows(layer.part(path), channels)
    _keep_columns(layer.part(layer.layout.ffn_out), channels)
    updated = describe(layer.module, layer.layout)
    assert updated is not None, "slicing whole heads keeps the head size readable"
    updated.sync_attributes()


def _ffn_width(layer: TransformerLayer) -> int:
    return layer.part(layer.layout.ffn_in[0]).out_features


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    return scores.topk(min(keep, len(scores))).indices


def _expand(groups: torch.Tensor, size: int) -> torch.Tensor:
    """Row indices of whole blocks of ``size`` rows."""
    return (groups[:, None] * size + torch.arange(size)[None, :]).flatten()


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[rows].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[rows].clone())
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[:, columns].clone())
    linear.in_features = len(columns)
