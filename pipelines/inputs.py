"""Models whose forward takes several tensors (``input_ids`` + ``attention_mask``, ...).

Everything downstream -- training batches, pruning's example inputs, tracing, ONNX export,
the serving probe, parallel ranks -- moves one tensor per batch. A task that declares
``input_names`` gives its splits' inputs as a dict ``{name: tensor}`` (or a tuple in that
order) of tensors of one shape and dtype; they are stacked along dimension 1 into one
``(rows, len(input_names), ...)`` tensor, and the teacher and students are wrapped in
:class:`PackedInputs`, which unstacks them and calls ``forward(name=tensor, ...)`` by
keyword: Hugging Face forwards differ in what their second positional parameter is
(GPT-2's is the key/value cache, not ``attention_mask``), and only names reach the right
parameter in every family. Each unstacked tensor is made contiguous, as quantized
embedding lookups require. Deployment specs and the registered pyfunc carry the names,
so a client sends the named tensors.
"""

from __future__ import annotations

import dataclasses
import torch
from torch import nn

from slimsearch.pipelines.outputs import ModelWrapper
from slimsearch.pipelines.task import Task, TaskLoadError, map_models


class PackedInputs(ModelWrapper):
    """``model`` served behind one tensor holding its inputs stacked along dimension 1."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__(model)
        self.input_names = names

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.model(**{name: tensor.contiguous() for name, tensor in zip(self.input_names, packed.unbind(1))})


def pack_task(task: Task, spec: str) -> Task:
    """``task`` with several named inputs packed into one tensor (unchanged without names)."""
    names = tuple(task.input_names)
    if not names:
        return task
    splits = {name: (_pack(getattr(task, name)[0], names, f"task '{spec}': {name}"), getattr(task, name)[1])
              for name in ("train", "val", "test")}
    return map_models(dataclasses.replace(task, **splits), lambda model: PackedInputs(model, names))


def _pack(inputs: object, names: tuple[str, ...], where: str) -> torch.Tensor:
    if isinstance(inputs, dict):
        if set(inputs) != set(names):
            raise TaskLoadError(f"{where} inputs have keys {sorted(inputs)}, the task declares input_names {list(names)}")
        tensors = [inputs[name] for name in names]
    elif isinstance(inputs, (tuple, list)) and len(inputs) == len(names):
        tensors = list(inputs)
    else:
        raise TaskLoadError(f"{where} inputs must be a dict {{name: tensor}} over input_names {list(names)} "
                            f"(or a tuple in that order), got {type(inputs).__name__}")
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TaskLoadError(f"{where} inputs must be torch tensors")
    shapes = {(tuple(t.shape), t.dtype) for t in tensors}
    if len(shapes) != 1:
        raise TaskLoadError(f"{where} inputs {list(names)} have different shapes or dtypes "
                            f"{sorted(str(s) for s in shapes)}; several inputs must share one shape and dtype "
                            "(e.g. input_ids and attention_mask, both int64 rows x tokens)")
    return torch.stack(tensors, dim=1)


def standard_dtypes(task: Task) -> Task:
    """``task`` with float64 inputs (numpy's default: ``torch.from_numpy`` of a data frame)
    as float32, the dtype a model's weights, every runtime and every quantizer here work
    in, and integer labels of any width as int64, the only ones a cross-entropy loss takes
    (a regression's targets as float32); without it the teacher or the first training step
    fails on a dtype mismatch."""
    def split(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = pair
        return inputs.float() if inputs.dtype == torch.float64 else inputs, labels.float() if task.regression else labels.long()

    return dataclasses.replace(task, train=split(task.train), val=split(task.val), test=split(task.test))
