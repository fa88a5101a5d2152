"""Resolving the config's ``task:`` to a checked :class:`Task`: a built-in name or a user's
``module:callable``, its data checked before anything trains, its models adapted to what
the pipeline serves (plain Linear layers, packed inputs, logits outputs). Kept apart from
the Task API it reads (``task``), which the adapters themselves import.
"""

from __future__ import annotations

import importlib
import re

import torch

from slimsearch.evaluators.families import plain_linear_layers
from slimsearch.pipelines.inputs import pack_task, standard_dtypes
from slimsearch.pipelines.outputs import with_logits_outputs
from slimsearch.pipelines.task import Task, TaskLoadError, map_models


BUILTIN_TASKS = {
    "digits": "slimsearch.pipelines.digits:make_task",
    "digits-transformer": "slimsearch.pipelines.digits_transformer:make_task",
    "minilm-topics": "slimsearch.pipelines.minilm:make_task",
}


def load_task(spec: str, seed: int) -> Task:
    """Resolve ``digits`` or ``package.module:callable`` to a Task, with one-line errors."""
    target = BUILTIN_TASKS.get(spec, spec)
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise TaskLoadError(
            f"task '{spec}' is neither a built-in ({', '.join(BUILTIN_TASKS)}) nor 'module:callable'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is reported the same way
        raise TaskLoadError(
            f"task '{spec}': importing module '{module_name}' failed ({type(exc).__name__}: {exc}); "
            "check the task: field and that the module is on PYTHONPATH"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskLoadError(f"task '{spec}': module '{module_name}' has no callable '{attr}'")
    try:
        task = factory(seed=seed)
    except Exception as exc:
        raise TaskLoadError(f"task '{spec}': {attr}(seed={seed}) raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(task, Task):
        raise TaskLoadError(f"task '{spec}': {attr}() returned {type(task).__name__}, expected slimsearch.pipelines.Task")
    task = pack_task(map_models(task, plain_linear_layers), spec)
    check_task_data(task, spec)
    return with_logits_outputs(standard_dtypes(task))


def check_task_data(task: Task, spec: str) -> None:
    """Refuse data a search would only trip over after hours of training: each split an
    ``(inputs, labels)`` tuple of tensors of equal, non-zero length, integer class labels
    in ``0..C-1``, one input shape and dtype across the splits; and a teacher to start from."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", task.metric_name) or task.metric_direction not in ("maximize", "minimize"):
        raise TaskLoadError(f"task '{spec}': metric_name '{task.metric_name}' / metric_direction "
                            f"'{task.metric_direction}' must be lowercase letters, digits and _ / maximize or minimize")
    if task.teacher_architecture is None and task.pretrained_teacher is None:
        raise TaskLoadError(f"task '{spec}' has no teacher; give it pretrained_teacher=lambda: model (your trained "
                            "model) or teacher_architecture=ModelClass (trained by slimsearch)")
    for name in ("train", "val", "test"):
        split = getattr(task, name)
        where = f"task '{spec}': {name}"
        if not (isinstance(split, tuple) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split)):
            raise TaskLoadError(f"{where} must be a tuple (inputs, labels) of two torch tensors, "
                                f"got {type(split).__name__}; wrap lists with torch.tensor(...)")
        inputs, labels = split
        if len(labels) == 0 or len(inputs) != len(labels):
            raise TaskLoadError(f"{where} has {len(inputs)} input rows and {len(labels)} labels; "
                                "each split needs the same, non-zero number of both")
        if task.regression:
            if not labels.is_floating_point() or labels.dim() not in (1, 2):
                raise TaskLoadError(f"{where} targets are {str(labels.dtype).removeprefix('torch.')} "
                                    f"{tuple(labels.shape)}; a regression task needs float targets, one value "
                                    "(rows,) or several (rows, outputs) per row")
        elif labels.is_floating_point():
            raise TaskLoadError(f"{where} labels are {str(labels.dtype).removeprefix('torch.')}; a classification "
                                "task needs integer classes 0..C-1 (labels.long()); for continuous targets declare "
                                "Task(..., regression=True, metric=r2_score, metric_name='r2')")
        elif labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TaskLoadError(f"{where} labels are {str(labels.dtype).removeprefix('torch.')}; class labels must be "
                                "integers 0..C-1 (labels.long())")
        elif labels.dim() != 1 or int(labels.min()) < 0:
            raise TaskLoadError(f"{where} labels must be a 1-D tensor of class indices >= 0 "
                                f"(got shape {tuple(labels.shape)}, min {int(labels.min())})")
        if inputs.shape[1:] != task.train[0].shape[1:] or inputs.dtype != task.train[0].dtype:
            raise TaskLoadError(f"{where} inputs are {str(inputs.dtype).removeprefix('torch.')} "
                                f"{tuple(inputs.shape[1:])}, train's are {str(task.input_dtype).removeprefix('torch.')} "
                                f"{task.input_shape}; every split needs the same shape and dtype")
