"""The public Task API: what a user plugs in to compress their own model.

A task is a teacher + its data + a quality metric: top-1 accuracy by default, or any
metric the task names with its direction (``metric_name="r2"``, ``"mae"`` minimised, ...).
A regression task (``regression=True``) has float targets, trains with mean squared error
and distils by matching the teacher's outputs. Point the config's ``task:`` at a
``module:callable`` that returns a :class:`Task` (it is called with ``seed=``), or use a
built-in name (``digits``, ``digits-transformer``). If ``pretrained_teacher`` is given
it is used as is; otherwise slimsearch trains ``teacher_architecture()`` once with the
config's training recipe and caches the weights.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from slimsearch.spaces.errors import SlimsearchError

Split = tuple[torch.Tensor, torch.Tensor]
"""(inputs, targets) for one split, already preprocessed: integer class labels, or float
values for a regression task."""
Direction = Literal["maximize", "minimize"]


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max equals the label (the default task metric)."""
    return float((logits.argmax(dim=1) == labels).float().mean())


def r2_score(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Coefficient of determination of a regression (1 is perfect; maximise)."""
    predicted = outputs.reshape(targets.shape).float()
    residual = (targets - predicted).pow(2).sum()
    total = (targets - targets.mean(dim=0)).pow(2).sum()
    return float(1 - residual / total.clamp(min=1e-12))


def mean_absolute_error(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean absolute error of a regression, in the targets' units (minimise)."""
    return float((outputs.reshape(targets.shape).float() - targets).abs().mean())


@dataclass(frozen=True)
class Task:
    """A model to compress, the data to judge it on, and how to score it.

    ``teacher_architecture()`` builds the untrained teacher slimsearch trains; a user
    who already has the trained model gives ``pretrained_teacher`` instead (one of the
    two is needed). ``student_architecture(width, depth)`` builds an untrained member of the student
    family; ``width`` multiplies channel/feature counts and ``depth`` counts stages. A
    pretrained transformer may leave it out: its students are then only cut from the
    teacher's own layers (``space.student.init: [teacher]``).
    ``fingerprint`` identifies the task's data + architecture version in cache keys:
    change it when either changes so stale cached weights are not reused.
    """

    name: str
    train: Split
    val: Split
    test: Split
    teacher_architecture: Callable[[], nn.Module] | None = None
    student_architecture: Callable[[float, int], nn.Module] | None = None
    metric: Callable[[torch.Tensor, torch.Tensor], float] = top1_accuracy
    """``metric(outputs, targets) -> float`` on a whole split; a module-level function, so
    evaluators on other processes (Ray) can receive it."""
    pretrained_teacher: Callable[[], nn.Module] | None = None
    fingerprint: str = ""
    protected_modules: tuple[str, ...] = field(default_factory=tuple)
    training_defaults: dict[str, float] = field(default_factory=dict)
    """Training-recipe values this task needs (e.g. ``{"lr": 5e-5, "teacher_epochs": 3}``
    for a pretrained transformer); a value set in the config's ``training`` section wins."""
    input_names: tuple[str, ...] = ()
    """For a forward that takes several tensors: their names, in ``forward``'s order; the
    splits' inputs are then dicts ``{name: tensor}`` (see ``pipelines.inputs``)."""

    metric_name: str = "accuracy"
    """What ``metric`` measures, as objectives, constraints (``<name>_drop``), columns and
    ``select`` limits call it; lowercase letters, digits and ``_``."""
    metric_direction: Direction = "maximize"
    regression: bool = False
    """Float targets (rows, or rows x outputs), trained with mean squared error; the
    model's outputs are the predictions."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (without the batch dimension)."""
        return tuple(self.train[0].shape[1:])

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype of the inputs (float32 features, int64 token ids, ...), kept end to end."""
        return self.train[0].dtype

    def input_signature(self) -> dict[str, object]:
        """What a deployment feeds the model: one example's shape and the dtype (and, for several
        inputs, their names: the served artifact takes them stacked along dimension 1), as plain data."""
        signature: dict[str, object] = {"input_shape": list(self.input_shape),
                                        "input_dtype": str(self.input_dtype).removeprefix("torch.")}
        if self.input_names:
            signature["input_names"] = list(self.input_names)
            signature["packing"] = "the named inputs stacked along dimension 1, in this order"
        return signature

    def serving_batch(self, size: int) -> torch.Tensor:
        """``size`` real validation rows (cycled when the split is smaller): what latency and
        memory are measured on, so any input dtype and value range is served as deployed."""
        rows = self.val[0]
        return rows[torch.arange(size) % len(rows)].contiguous()

    @property
    def num_classes(self) -> int:
        """Output columns the model must give: classes, or regression targets per row."""
        if self.regression:
            return 1 if self.train[1].dim() == 1 else int(self.train[1].shape[1])
        return int(self.train[1].max()) + 1

    @property
    def cache_identity(self) -> str:
        return f"{self.name}:{self.fingerprint or 'v1'}"


def map_models(task: Task, adapt: Callable[[nn.Module], nn.Module]) -> Task:
    """``task`` whose model factories pass what they build through ``adapt`` (anything
    that is not a module is left for the teacher check to name)."""
    def adapted(factory: Callable[..., nn.Module] | None) -> Callable[..., nn.Module] | None:
        if factory is None:
            return None
        return lambda *args: (lambda model: adapt(model) if isinstance(model, nn.Module) else model)(factory(*args))

    return dataclasses.replace(task, teacher_architecture=adapted(task.teacher_architecture),
                               student_architecture=adapted(task.student_architecture),
                               pretrained_teacher=adapted(task.pretrained_teacher))


class TaskLoadError(SlimsearchError, RuntimeError):
    """The task named in the config could not be imported or built."""


def space_problem(task: Task, students_from_scratch: bool) -> str | None:
    """Why this task cannot serve the configured space, found before anything is trained."""
    if students_from_scratch and task.student_architecture is None:
        return (f"task '{task.name}' has no student_architecture, but space.student.init includes scratch; "
                "set space.student.distill: false (prune and quantize the teacher itself), space.student.init: "
                "[teacher] (a transformer's students cut from its layers) or give the task a "
                "student_architecture(width, depth)")
    return None


def check_teacher(task: Task, teacher: nn.Module, origin: str) -> None:
    """The teacher must be a module that runs on a validation batch and returns finite
    logits with a column for every class; else no trial could mean anything."""
    where = f"task '{task.name}': the {origin} teacher"
    if not isinstance(teacher, nn.Module):
        raise TaskLoadError(f"{where} is a {type(teacher).__name__}, not a torch.nn.Module")
    rows = task.val[0][:8]
    try:
        with torch.no_grad():
            logits = teacher.eval()(rows)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise TaskLoadError(f"{where} fails on a validation batch ({type(exc).__name__}: {first}); "
                            "check that it takes the task's inputs") from exc
    if task.regression:
        if (not isinstance(logits, torch.Tensor) or logits.shape[:1] != (len(rows),)
                or logits[0].numel() != task.num_classes):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TaskLoadError(f"{where} returned {shape} for {len(rows)} rows; a regression model must return "
                                f"(rows, {task.num_classes}) predictions, one per target")
    else:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(rows):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise TaskLoadError(f"{where} returned {shape} for {len(rows)} rows; it must return logits (rows, classes)")
        classes = max(int(split[1].max()) for split in (task.train, task.val, task.test)) + 1
        if logits.shape[1] < classes:
            raise TaskLoadError(f"{where} returns {logits.shape[1]} logits per row but the labels go up to "
                                f"{classes - 1}; labels must lie in 0..{logits.shape[1] - 1}")
    if not torch.isfinite(logits).all():
        raise TaskLoadError(f"{where} returns NaN or infinite logits on validation rows; check its weights "
                            "(or the training recipe, e.g. a lower training.lr)")
    try:  # the teacher's own measurement serves its TorchScript trace, as every torch-runtime trial does
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.jit.trace(teacher, rows, check_trace=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise TaskLoadError(f"{where} cannot be traced by torch.jit.trace ({type(exc).__name__}: {first}); "
                            "slimsearch serves models as traced graphs: remove data-dependent Python from forward()") from exc
