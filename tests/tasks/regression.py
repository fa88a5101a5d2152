"""A regression task as users bring one: scikit-learn's diabetes data (offline), a tabular MLP,
a continuous target, scored by R^2 (maximised) or by mean absolute error (minimised).

Features are standardised; the target (disease progression, ~25-346) is scaled to unit
variance so one learning rate suits it, and the MAE is reported back in the target's units.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_diabetes
from torch import nn

from slimsearch.pipelines import Task
from slimsearch.pipelines.task import mean_absolute_error, r2_score

SCALE = 77.0
"""Standard deviation of the diabetes target: MAE in the target's own units."""


class Regressor(nn.Module):
    def __init__(self, width: float = 1.0, depth: int = 2):
        super().__init__()
        hidden = max(4, round(64 * width))
        layers: list[nn.Module] = [nn.Linear(10, hidden), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def _splits(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    features, target = load_diabetes(return_X_y=True)
    x = torch.from_numpy(features)  # float64, as a user's numpy data comes
    x = (x - x.mean(dim=0)) / x.std(dim=0)
    y = torch.from_numpy(target)
    y = (y - y.mean()) / SCALE
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return {"train": (x[:300], y[:300]), "val": (x[300:370], y[300:370]), "test": (x[370:], y[370:])}


def mae_in_target_units(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return SCALE * mean_absolute_error(outputs, targets)


def make_r2_task(seed: int) -> Task:
    return Task(name="diabetes-r2", **_splits(seed), teacher_architecture=Regressor,
                student_architecture=lambda width, depth: Regressor(width, depth), regression=True,
                metric=r2_score, metric_name="r2", training_defaults={"lr": 1e-3, "teacher_epochs": 30},
                fingerprint="v1")


def make_mae_task(seed: int) -> Task:
    return Task(name="diabetes-mae", **_splits(seed), teacher_architecture=Regressor,
                student_architecture=lambda width, depth: Regressor(width, depth), regression=True,
                metric=mae_in_target_units, metric_name="mae", metric_direction="minimize",
                training_defaults={"lr": 1e-3, "teacher_epochs": 30}, fingerprint="v1")
