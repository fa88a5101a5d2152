"""What a transformer layer *has*, for every common family, in one place.

Pruning (whole heads, FFN width, residual width kept), students cut from a teacher,
tensor-parallel plans, MAC counting and int8 all need to know where a layer keeps its
attention projections, its output projection and its feed-forward layers, and how many
heads it has. Families name these differently (BERT ``attention.self.query``, DistilBERT
``attention.q_lin`` + ``n_heads``, GPT-2 a fused ``attn.c_attn``, LLaMA ``self_attn.q_proj``
with fewer key/value heads, ViT ``attention.q_proj`` or ``attention.attention.query``), so
a layer is matched by the submodule paths it holds (:data:`LAYOUTS`), never by class
name. It lives beside the serving code because tensor-parallel planning needs it as much
as the compression stages do.

GPT-2's ``Conv1D`` is a Linear layer stored transposed: :func:`plain_linear_layers`
turns it into ``nn.Linear`` once when the model is built, so MAC counting, dynamic int8
and pruning see ordinary Linear layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

HEAD_COUNTS = ("num_attention_heads", "n_heads", "n_head", "num_heads")
"""Attributes an attention module may keep its (query) head count in."""
HEAD_SIZES = ("head_dim", "attention_head_size")
KEY_VALUE_HEAD_COUNTS = ("num_key_value_heads",)
PROJECTION_WIDTHS = ("all_head_size", "split_size")
"""Attributes that hold the width of one projection (updated when heads are removed);
residual widths (``embed_dim``, ``dim``, ``hidden_size``) are never changed."""


@dataclass(frozen=True)
class LayerLayout:
    """Where one family keeps a transformer layer's parts, as paths inside the layer."""

    family: str
    attention: str
    """The module holding the head count (the first of its projections' parents)."""
    projections: tuple[str, ...]
    """Query, key, value layers; or one fused layer whose rows are query | key | value."""
    output: str
    ffn_in: tuple[str, ...]
    """Feed-forward input layers (two in gated FFNs: gate and up)."""
    ffn_out: str

    @property
    def fused(self) -> bool:
        return len(self.projections) == 1


LAYOUTS = (
    LayerLayout("BERT-style", "attention.self", ("attention.self.query", "attention.self.key", "attention.self.value"),
                "attention.output.dense", ("intermediate.dense",), "output.dense"),
    LayerLayout("ViT (transformers 4)", "attention.attention",
                ("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                "attention.output.dense", ("intermediate.dense",), "output.dense"),
    LayerLayout("DistilBERT-style", "attention", ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                "attention.out_lin", ("ffn.lin1",), "ffn.lin2"),
    LayerLayout("GPT-2-style", "attn", ("attn.c_attn",), "attn.c_proj", ("mlp.c_fc",), "mlp.c_proj"),
    LayerLayout("ViT-style", "attention", ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
                "attention.o_proj", ("mlp.fc1",), "mlp.fc2"),
    LayerLayout("LLaMA-style", "self_attn", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                "self_attn.o_proj", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
    LayerLayout("OPT/BART-style", "self_attn", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                "self_attn.out_proj", ("fc1",), "fc2"),
    LayerLayout("timm ViT-style", "attn", ("attn.qkv",), "attn.proj", ("mlp.fc1",), "mlp.fc2"),
)
KNOWN_FAMILIES = ", ".join(layout.family for layout in LAYOUTS)


@dataclass(frozen=True)
class TransformerLayer:
    """One matched layer: its module, its layout and its attention geometry."""

    module: nn.Module
    layout: LayerLayout
    heads: int
    key_value_heads: int
    head_dim: int

    def part(self, path: str) -> nn.Linear:
        return self.module.get_submodule(path)  # type: ignore[return-value]

    @property
    def attention(self) -> nn.Module:
        return self.module.get_submodule(self.layout.attention)

    @property
    def projections(self) -> list[nn.Linear]:
        return [self.part(path) for path in self.layout.projections]

    @property
    def query_width(self) -> int:
        return self.heads * self.head_dim

    def row_slices(self) -> list[tuple[nn.Linear, int, int]]:
        """``(layer, first row, rows)`` of the query, key and value blocks (a fused layer
        holds all three, one after the other)."""
        kv_width = self.key_value_heads * self.head_dim
        widths = (self.query_width, kv_width, kv_width)
        if self.layout.fused:
            fused = self.projections[0]
            return [(fused, sum(widths[:i]), widths[i]) for i in range(3)]
        return [(layer, 0, width) for layer, width in zip(self.projections, widths)]

    def sync_attributes(self) -> None:
        """Tell the attention module how many heads it has left (its forward reads the
        head size, which pruning keeps; the counts are what generation and configs read)."""
        attention = self.attention
        for name in HEAD_COUNTS:
            if isinstance(getattr(attention, name, None), int):
                setattr(attention, name, self.heads)
        for name in KEY_VALUE_HEAD_COUNTS:
            if isinstance(getattr(attention, name, None), int):
                setattr(attention, name, self.key_value_heads)
        for name in PROJECTION_WIDTHS:
            if isinstance(getattr(attention, name, None), int):
                setattr(attention, name, self.query_width)


def match_layout(module: nn.Module) -> LayerLayout | None:
    """The layout whose every path is a Linear layer inside ``module``, or ``None``."""
    for layout in LAYOUTS:
        paths = (*layout.projections, layout.output, *layout.ffn_in, layout.ffn_out)
        try:
            if all(isinstance(module.get_submodule(path), nn.Linear) for path in paths):
                return layout
        except AttributeError:
            continue
    return None


def describe(module: nn.Module, layout: LayerLayout) -> TransformerLayer | None:
    """The layer's attention geometry, or ``None`` if it cannot be read (no head count or size)."""
    attention = module.get_submodule(layout.attention)
    projections = [module.get_submodule(path) for path in layout.projections]
    query_rows = projections[0].out_features // 3 if layout.fused else projections[0].out_features
    head_dim = next((getattr(attention, n) for n in HEAD_SIZES if isinstance(getattr(attention, n, None), int)), None)
    heads = next((getattr(attention, n) for n in HEAD_COUNTS if isinstance(getattr(attention, n, None), int)), None)
    if head_dim is None and heads:
        head_dim = query_rows // heads
    if not head_dim or query_rows % head_dim:
        return None
    kv_rows = query_rows if layout.fused else projections[1].out_features
    if kv_rows % head_dim or (query_rows // head_dim) % (kv_rows // head_dim):
        return None
    return TransformerLayer(module, layout, query_rows // head_dim, kv_rows // head_dim, head_dim)


def named_transformer_layers(model: nn.Module) -> list[tuple[str, TransformerLayer]]:
    """``(path, layer)`` of every layer of ``model`` that matches a known layout and whose
    heads can be read."""
    found = []
    for name, module in model.named_modules():
        layout = match_layout(module)
        if layout is not None and (layer := describe(module, layout)) is not None:
            found.append((name, layer))
    return found


def transformer_layers(model: nn.Module) -> list[TransformerLayer]:
    return [layer for _, layer in named_transformer_layers(model)]


def layer_stack(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList] | None:
    """``(owner, attribute, layers)`` of the model's stack of transformer layers: the
    longest ``nn.ModuleList`` whose every entry matches a known layout, or ``None``."""
    best = None
    for owner in model.modules():
        for attribute, child in owner.named_children():
            if (isinstance(child, nn.ModuleList) and len(child) > 0
                    and all(match_layout(layer) is not None for layer in child)
                    and (best is None or len(child) > len(best[2]))):
                best = (owner, attribute, child)
    return best


def tensor_parallel_plan(layer: TransformerLayer, degree: int) -> dict[str, str]:
    """Megatron-style plan of one layer: query/key/value and the FFN input sharded by output
    columns, the attention output and FFN output by input rows; ranks hold whole heads (a
    fused query/key/value layer is first reordered by :func:`group_fused_rows_by_rank`)."""
    if layer.key_value_heads % degree:
        raise ValueError(f"{layer.key_value_heads} key/value heads do not split evenly over {degree} ranks")
    plan = {path: "colwise" for path in (*layer.layout.projections, *layer.layout.ffn_in)}
    return plan | {layer.layout.output: "rowwise", layer.layout.ffn_out: "rowwise"}


def group_fused_rows_by_rank(layer: TransformerLayer, degree: int) -> None:
    """Reorder a fused query | key | value layer's rows so that rank ``r``'s contiguous
    column shard holds its own heads' queries, keys and values, in that order; with
    :func:`use_rank_widths` each rank's forward then splits its shard as the whole layer
    splits the full output. No-op for separate projections."""
    if not layer.layout.fused:
        return
    fused = layer.projections[0]
    blocks = [torch.arange(first, first + rows).chunk(degree) for _, first, rows in layer.row_slices()]
    order = torch.cat([block[rank] for rank in range(degree) for block in blocks])
    with torch.no_grad():
        fused.weight.copy_(fused.weight[order])
        if fused.bias is not None:
            fused.bias.copy_(fused.bias[order])


def use_rank_widths(layer: TransformerLayer, degree: int) -> None:
    """After sharding: the attention module's head counts and projection widths are this
    rank's share (a fused layer's forward splits its output by ``split_size``)."""
    TransformerLayer(layer.module, layer.layout, layer.heads // degree, layer.key_value_heads // degree,
                     layer.head_dim).sync_attributes()


def user_model_name(model: nn.Module) -> str:
    """The class name of the user's model inside slimsearch's adapters (which hold it as
    their only child, ``model``), for messages a user reads."""
    while [name for name, _ in model.named_children()] == ["model"]:
        model = model.model  # type: ignore[assignment]
    return type(model).__name__


def is_transposed_linear(module: nn.Module) -> bool:
    """A Linear layer stored as ``weight (in, out)`` with an ``nf`` (out) attribute: Hugging
    Face's ``Conv1D`` (GPT-2 and its descendants)."""
    weight = getattr(module, "weight", None)
    return (not isinstance(module, nn.Linear) and isinstance(getattr(module, "nf", None), int)
            and isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == module.nf)


def plain_linear_layers(model: nn.Module) -> nn.Module:
    """``model`` with every transposed Linear (``Conv1D``) replaced, in place, by the
    equivalent ``nn.Linear`` (same outputs): torch's int8, MAC counters and pruners only
    know ``nn.Linear``."""
    for owner in list(model.modules()):
        for name, child in list(owner.named_children()):
            if is_transposed_linear(child):
                weight = child.weight.detach()
                bias = getattr(child, "bias", None)
                linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(weight.t())
                    if bias is not None:
                        linear.bias.copy_(bias.detach())
                linear.train(child.training)
                setattr(owner, name, linear)
    return model
