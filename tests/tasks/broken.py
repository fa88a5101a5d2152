"""Tasks a user can get wrong, one factory each: the search must refuse them with one line."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from slimsearch.pipelines import Task


class MLP(nn.Module):
    def __init__(self, width: float = 1.0, depth: int = 1, classes: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, max(1, round(16 * width))), nn.ReLU())
        self.head = nn.Linear(max(1, round(16 * width)), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class NaNTeacher(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


class Untraceable(MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # stands for any model torch.jit.trace cannot follow
            raise RuntimeError("data-dependent control flow the tracer cannot record")
        return super().forward(x)


def _good(seed: int) -> Task:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 20, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return Task(name="broken", train=(x[:200], y[:200]), val=(x[200:250], y[200:250]), test=(x[250:], y[250:]),
                teacher_architecture=MLP, student_architecture=lambda width, depth: MLP(width, depth))


def _with(seed: int, **changes: object) -> Task:
    return dataclasses.replace(_good(seed), **changes)


def labels_out_of_range(seed: int) -> Task:
    task = _good(seed)
    return _with(seed, train=(task.train[0], task.train[1] + 2))


def negative_labels(seed: int) -> Task:
    task = _good(seed)
    return _with(seed, val=(task.val[0], task.val[1] - 1))


def float_labels(seed: int) -> Task:
    task = _good(seed)
    return _with(seed, train=(task.train[0], task.train[1].float()))


def splits_as_lists(seed: int) -> Task:
    task = _good(seed)
    return _with(seed, train=[task.train[0].tolist(), task.train[1].tolist()])


def mismatched_lengths(seed: int) -> Task:
    task = _good(seed)
    return _with(seed, test=(task.test[0], task.test[1][:-3]))


def empty_validation(seed: int) -> Task:
    task = _good(seed)
    return _with(seed, val=(task.val[0][:0], task.val[1][:0]))


def teacher_not_a_module(seed: int) -> Task:
    return _with(seed, teacher_architecture=lambda: "a path to my weights")


def nan_pretrained_teacher(seed: int) -> Task:
    return _with(seed, pretrained_teacher=lambda: NaNTeacher())


def nan_teacher_architecture(seed: int) -> Task:
    return _with(seed, teacher_architecture=NaNTeacher)


def teacher_with_wrong_inputs(seed: int) -> Task:
    return _with(seed, teacher_architecture=lambda: nn.Linear(7, 3))


def untraceable_teacher(seed: int) -> Task:
    return _with(seed, teacher_architecture=Untraceable)


def named_inputs_of_different_shapes(seed: int) -> Task:
    task = _good(seed)
    split = lambda s: ({"a": s[0], "b": s[0][:, :5]}, s[1])  # noqa: E731
    return _with(seed, train=split(task.train), val=split(task.val), test=split(task.test), input_names=("a", "b"))


def no_teacher(seed: int) -> Task:
    return _with(seed, teacher_architecture=None)
