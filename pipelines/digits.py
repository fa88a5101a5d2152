"""Built-in ``digits`` task: scikit-learn's 8x8 handwritten digits, fully offline.

Images are upsampled to 16x16 so convolutions cost enough for latency differences to be
measurable; the split is stratified and fixed by the seed. The CNN family is written
here (torchvision does not import beside the CPU torch wheel used by this project).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from slimsearch.pipelines.task import Task

BASE_CHANNELS = (32, 64, 128)
TEACHER_WIDTH, TEACHER_DEPTH = 1.0, 3
POOLED_SIDE = 2


class DigitsCNN(nn.Module):
    """``depth`` conv-BN-ReLU stages (channels doubling, 2x2 max-pool between), 2x2 pool, linear head."""

    def __init__(self, width: float = TEACHER_WIDTH, depth: int = TEACHER_DEPTH, num_classes: int = 10):
        super().__init__()
        if not 1 <= depth <= len(BASE_CHANNELS):
            raise ValueError(f"digits CNN depth must be 1..{len(BASE_CHANNELS)}, got {depth}")
        layers: list[nn.Module] = []
        self._stage_ends: list[str] = []
        in_ch = 1
        for stage in range(depth):
            out_ch = max(1, round(BASE_CHANNELS[stage] * width))
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]
            self._stage_ends.append(f"features.{len(layers) - 1}")
            if stage < depth - 1:
                layers.append(nn.MaxPool2d(2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        # A 2x2 pooled map (not global pooling) keeps the coarse layout of the digit, which
        # shallow students need: with global pooling a depth-2 student stalled at ~82 %.
        self.pool = nn.AdaptiveAvgPool2d(POOLED_SIDE)
        self.head = nn.Linear(in_ch * POOLED_SIDE**2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))

    def feature_stages(self) -> list[str]:
        """Each stage's ReLU output (16x16, 8x8, 4x4 maps): stage i of any width matches stage i
        of the teacher, for feature distillation."""
        return list(self._stage_ends)


def load_splits(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """Stratified 60/20/20 train/val/test split of the digits images, scaled to [0, 1]."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    train_idx, rest_idx = train_test_split(idx, test_size=0.4, random_state=seed, stratify=y.numpy())
    val_idx, test_idx = train_test_split(rest_idx, test_size=0.5, random_state=seed, stratify=y.numpy()[rest_idx])
    return tuple((x[i], y[i]) for i in (train_idx, val_idx, test_idx))


def make_task(seed: int = 0) -> Task:
    train, val, test = load_splits(seed)
    return Task(
        name="digits",
        train=train,
        val=val,
        test=test,
        teacher_architecture=DigitsCNN,
        student_architecture=lambda width, depth: DigitsCNN(width=width, depth=depth),
        fingerprint="cnn16-pool2-v2",
        protected_modules=("head",),
    )
