"""The public Task API: what a user plugs in to compress their own model.

A task is a teacher + its data + an accuracy metric. Point the config's ``task:`` at a
``module:callable`` that returns a :class:`Task` (it is called with ``seed=``), or use a
built-in name (``digits``, ``digits-transformer``). If ``pretrained_teacher`` is given
it is used as is; otherwise slimsearch trains ``teacher_architecture()`` once with the
config's training recipe and caches the weights.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

Split = tuple[torch.Tensor, torch.Tensor]
"""(inputs, integer labels) for one split, already preprocessed."""


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label (the default task metric)."""
    return float((logits.argmax(dim=1) == labels).float().mean())


@dataclass(frozen=True)
class Task:
    """A model to compress, the data to judge it on, and how to score it.

    ``student_architecture(width, depth)`` builds an untrained member of the student
    family; ``width`` multiplies channel/feature counts and ``depth`` counts stages.
    ``fingerprint`` identifies the task's data + architecture version in cache keys:
    change it when either changes so stale cached weights are not reused.
    """

    name: str
    train: Split
    val: Split
    test: Split
    teacher_architecture: Callable[[], nn.Module]
    student_architecture: Callable[[float, int], nn.Module]
    metric: Callable[[torch.Tensor, torch.Tensor], float] = top1_accuracy
    pretrained_teacher: Callable[[], nn.Module] | None = None
    fingerprint: str = ""
    protected_modules: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch dimension)."""
        return tuple(self.train[0].shape[1:])

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype of the inputs (float32 features, int64 token ids, ...), kept end to end."""
        return self.train[0].dtype

    def input_signature(self) -> dict[str, object]:
        """What a deployment feeds the model: one example's shape and the dtype, as plain data."""
        return {"input_shape": list(self.input_shape), "input_dtype": str(self.input_dtype).removeprefix("torch.")}

    def serving_batch(self, size: int) -> torch.Tensor:
        """``size`` real validation rows (cycled when the split is smaller): what latency and
        memory are measured on, so any input dtype and value range is served as deployed."""
        rows = self.val[0]
        return rows[torch.arange(size) % len(rows)].contiguous()

    @property
    def num_classes(self) -> int:
        return int(self.train[1].max()) + 1

    @property
    def cache_identity(self) -> str:
        return f"{self.name}:{self.fingerprint or 'v1'}"


BUILTIN_TASKS = {
    "digits": "slimsearch.pipelines.digits:make_task",
    "digits-transformer": "slimsearch.pipelines.digits_transformer:make_task",
}


class TaskLoadError(RuntimeError):
    """The task named in the config could not be imported or built."""


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
    return task
