"""What each rank of a parallel strategy serves, prepared in the parent before the probe runs.

* ``single`` and ``data_parallel``: every rank loads the whole TorchScript artifact.
* ``tensor_parallel``: every rank loads the eager model (pickled) and shards it with
  DTensor ``parallelize_module``. The model says which Linear layers to shard through a
  ``tensor_parallel_plan(degree)`` method (``{name: "colwise" | "rowwise"}``); models
  without one (conv nets), and quantized or non-Linear layers in the plan, are rejected
  with the reason: DTensor shards float ``nn.Linear`` weights only.
* ``pipeline_parallel``: the model's FX graph is cut into ``degree`` stages at points
  where exactly one floating-point tensor is live, balanced by weight bytes; each stage
  is traced to its own TorchScript file. Quantized graphs whose activations are int8
  between layers have no such cut and are rejected.

Outputs of every parallel plan are checked in the probe against the single-process
artifact; ``tolerance`` is relative to the largest reference logit, loose where the
model computes in reduced precision (16-bit, or dynamic int8, whose activation scales
depend on the rows in the shard: 2.8-3.6 % of the largest logit on digits-transformer)
and tight for float32 (measured 2e-7).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimsearch.evaluators.families import (KNOWN_FAMILIES, group_fused_rows_by_rank, named_transformer_layers,
                                           user_model_name)
from slimsearch.evaluators.families import tensor_parallel_plan as family_plan
from slimsearch.evaluators.memory import state_dict_bytes
from slimsearch.spaces import InvalidCandidate

FLOAT32_TOLERANCE = 1e-4
REDUCED_PRECISION_TOLERANCE = 0.1


@dataclass(frozen=True)
class RankPlan:
    strategy: str
    degree: int
    rank_files: list[str]
    """The file rank ``r`` loads: TorchScript, or a pickled eager module for tensor_parallel."""
    tolerance: float
    micro_batches: int = 1
    boundaries: list[tuple[list[int], str]] = field(default_factory=list)
    """Pipeline: (shape of one example, dtype) of the tensor stage ``i`` sends on."""
    weight_bytes: list[int] = field(default_factory=list)
    """Per-rank weight bytes known before serving; tensor_parallel ranks report their shards."""


def plan_ranks(model: nn.Module, example: torch.Tensor, strategy: str, degree: int, artifact: Path) -> RankPlan:
    """Prepare the per-rank files for ``strategy``; raise InvalidCandidate if it cannot run."""
    tolerance = FLOAT32_TOLERANCE if _is_float32(model) else REDUCED_PRECISION_TOLERANCE
    if strategy in ("single", "data_parallel"):
        return RankPlan(strategy, degree, [str(artifact)] * degree, tolerance, weight_bytes=[state_dict_bytes(model)] * degree)
    if strategy == "tensor_parallel":
        _check_tensor_parallel(model, degree)
        eager = artifact.with_suffix(".eager.pt")
        ranks_model = copy.deepcopy(model)  # the candidate itself stays as measured and exported
        for _, layer in named_transformer_layers(ranks_model):
            group_fused_rows_by_rank(layer, degree)
        torch.save(ranks_model, eager)
        return RankPlan(strategy, degree, [str(eager)] * degree, tolerance)
    if strategy == "pipeline_parallel":
        return _plan_pipeline(model, example, degree, artifact, tolerance)
    raise InvalidCandidate(f"unknown parallel strategy '{strategy}'")


def deployment_problem(model: nn.Module, example: torch.Tensor, strategy: str, degree: int) -> str | None:
    """Why ``model``'s architecture cannot be served as ``strategy`` x ``degree``, found by
    planning it in a scratch folder (no files kept), or ``None``."""
    with tempfile.TemporaryDirectory(prefix="slimsearch-plan-") as scratch:
        try:
            plan_ranks(copy.deepcopy(model).eval(), example, strategy, degree, Path(scratch) / "model.pt")
        except InvalidCandidate as exc:
            return str(exc)
    return None


def tensor_parallel_plans(model: nn.Module, degree: int) -> list[tuple[str, dict[str, str]]]:
    """(path of the module owning a plan, its plan) for every planning module in ``model``;
    layers of a known transformer family get the Megatron plan without one (``families``)."""
    plans = []
    try:
        for path, module in model.named_modules():
            make_plan = getattr(module, "tensor_parallel_plan", None)
            if callable(make_plan):
                plans.append((path, make_plan(degree)))
        plans += [(path, family_plan(layer, degree)) for path, layer in named_transformer_layers(model)]
    except ValueError as exc:
        raise InvalidCandidate(f"tensor_parallel at degree {degree}: {exc}; use single or data_parallel") from exc
    return plans


def _check_tensor_parallel(model: nn.Module, degree: int) -> None:
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules()):
        raise InvalidCandidate("tensor_parallel shards float nn.Linear weights and this candidate's layers are int8 "
                               "(quantized layers cannot be sharded by DTensor): use bits 32/16 or another strategy")
    plans = tensor_parallel_plans(model, degree)
    if not plans:
        raise InvalidCandidate(
            f"tensor_parallel needs to know which Linear layers to shard, and {user_model_name(model)} neither has "
            f"transformer layers of a known family ({KNOWN_FAMILIES}) nor defines tensor_parallel_plan(degree) "
            "returning {layer name: 'colwise' | 'rowwise'} (docs/trial.md, step 4); add one or use another strategy"
        )
    for owner, plan in plans:
        for name in plan:
            layer = model.get_submodule(f"{owner}.{name}" if owner else name)
            if type(layer) is not nn.Linear:
                raise InvalidCandidate(
                    f"tensor_parallel shards float nn.Linear weights; '{name}' is "
                    f"{type(layer).__module__}.{type(layer).__name__} "
                    "(quantized layers cannot be sharded by DTensor): use bits 32/16 or another strategy"
                )


def _plan_pipeline(model: nn.Module, example: torch.Tensor, degree: int, artifact: Path, tolerance: float) -> RankPlan:
    try:
        graph_module = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    except Exception as exc:  # not traceable: a property of the model
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InvalidCandidate(f"pipeline_parallel cuts the model's torch.fx graph, and {user_model_name(model)} cannot "
                               f"be traced by torch.fx ({first}); use single, data_parallel or tensor_parallel") from exc
    with torch.no_grad():
        ShapeProp(graph_module).propagate(example)
    nodes = [n for n in graph_module.graph.nodes if n.op not in ("get_attr", "output")]
    if list(graph_module.graph.nodes)[-1].args[0] is not nodes[-1]:
        raise InvalidCandidate("pipeline_parallel needs a model whose forward returns one tensor computed last")
    cuts = _single_tensor_cuts(nodes)
    if len(cuts) < degree - 1:
        raise InvalidCandidate(
            f"pipeline_parallel degree {degree} needs {degree - 1} cut point(s) where one float tensor flows; "
            f"this model has {len(cuts)} (int8 graphs pass quantized tensors between layers)"
        )
    chosen = _balanced(cuts, _cumulative_cost(graph_module, nodes), degree)
    bounds = [0, *chosen, len(nodes) - 1]
    files, boundaries, weights = [], [], []
    activation = example
    for stage_index in range(degree):
        stage = _stage_module(graph_module, nodes, bounds[stage_index], bounds[stage_index + 1])
        path = artifact.with_suffix(f".stage{stage_index}.pt")
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit deprecation and tracer notices
            traced = torch.jit.trace(stage, activation, check_trace=False)
            torch.jit.save(traced, str(path))
            activation = stage(activation)
        files.append(str(path))
        boundaries.append((list(activation.shape[1:]), str(activation.dtype).removeprefix("torch.")))
        weights.append(state_dict_bytes(stage))
    return RankPlan("pipeline_parallel", degree, files, tolerance, micro_batches=_micro_batches(example, degree),
                    boundaries=boundaries, weight_bytes=weights)


def _single_tensor_cuts(nodes: list[fx.Node]) -> list[int]:
    """Indices ``i`` such that after ``nodes[i]`` only its own float tensor is still needed."""
    position = {node: index for index, node in enumerate(nodes)}
    last_use = {node: max((position.get(user, len(nodes)) for user in node.users), default=index)
                for index, node in enumerate(nodes)}
    cuts = []
    for index, node in enumerate(nodes[:-1]):
        if index == 0:
            continue  # cutting after the input would give stage 0 nothing to do
        live = [n for n in nodes[: index + 1] if last_use[n] > index]
        meta = node.meta.get("tensor_meta")
        if live == [node] and meta is not None and getattr(meta, "dtype", None) is not None and meta.dtype.is_floating_point:
            cuts.append(index)
    return cuts


def _cumulative_cost(graph_module: fx.GraphModule, nodes: list[fx.Node]) -> list[int]:
    """Running total of weight bytes (+1 per op) up to each node: what a stage has to hold and run."""
    total, running = 0, []
    for node in nodes:
        total += 1
        if node.op == "call_module":
            total += state_dict_bytes(graph_module.get_submodule(str(node.target)))
        running.append(total)
    return running


def _balanced(cuts: list[int], cost: list[int], degree: int) -> list[int]:
    """One cut per stage boundary, each nearest to an equal share of the total cost."""
    chosen: list[int] = []
    for boundary in range(1, degree):
        target = cost[-1] * boundary / degree
        remaining = [c for c in cuts if not chosen or c > chosen[-1]]
        usable = remaining[: len(remaining) - (degree - 1 - boundary)]
        chosen.append(min(usable, key=lambda c: abs(cost[c] - target)))
    return chosen


def _stage_module(graph_module: fx.GraphModule, nodes: list[fx.Node], start: int, end: int) -> fx.GraphModule:
    """The nodes after ``start`` up to ``end`` as a module taking ``nodes[start]``'s value."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {nodes[start]: graph.placeholder("x")}

    def lookup(node: fx.Node) -> fx.Node:
        if node not in env:  # a constant (get_attr) used here: each stage reads its own copy
            env[node] = graph.node_copy(node, lookup)
        return env[node]

    for node in nodes[start + 1 : end + 1]:
        env[node] = graph.node_copy(node, lookup)
    graph.output(env[nodes[end]])
    return fx.GraphModule(graph_module, graph).eval()


def _micro_batches(example: torch.Tensor, degree: int) -> int:
    """Two micro-batches per stage when the batch allows it, so stages overlap."""
    return next(m for m in (2 * degree, degree, 1) if len(example) % m == 0)


def _is_float32(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    quantized = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    return not quantized and all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
