"""A user's own trained tabular model as it usually arrives: float64 features and int32
labels straight from numpy (scikit-learn's wine data), a trained ``nn.Sequential`` handed over as
``pretrained_teacher``, and no architecture factory at all."""

from __future__ import annotations

import torch
from sklearn.datasets import load_wine
from torch import nn

from slimsearch.pipelines import Task


def make_task(seed: int) -> Task:
    data = load_wine()
    order = torch.randperm(len(data.target), generator=torch.Generator().manual_seed(0))
    x = torch.from_numpy(data.data)[order]  # float64, as numpy gives it
    x = (x - x.mean(0)) / x.std(0)
    y = torch.from_numpy(data.target.astype("int32"))[order]  # numpy's int on Windows, many data frames
    train, val, test = (x[:110], y[:110]), (x[110:145], y[110:145]), (x[145:], y[145:])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # the user's own training, in their own dtype
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(train[0].float()), train[1].long()).backward()
        optimiser.step()
    return Task(name="wine", train=train, val=val, test=test, pretrained_teacher=lambda: model.eval(),
                fingerprint="v1")
