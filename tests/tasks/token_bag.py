"""A token-id classifier, as users bring them: int64 ids -> nn.Embedding -> mean pool -> MLP.

Sequences draw from 100 odd ids above 2048 (float16 rounds every one of them to a
neighbour, so a model whose ids were cast would look up wrong rows); the label is whether
most of a sequence's ids are in the upper half, so the model must read the ids themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from slimsearch.pipelines import Task

VOCAB, LENGTH = 2400, 7
USED_IDS = torch.arange(2049, 2249, 2)


class TokenBag(nn.Module):
    def __init__(self, width: float = 1.0, depth: int = 1):
        super().__init__()
        dim = max(4, round(32 * width))
        self.embed = nn.Embedding(VOCAB, dim)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(dim, dim), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(dim, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.embed(ids).mean(dim=1)))


def make_task(seed: int) -> Task:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(USED_IDS), (3000, LENGTH), generator=generator)
    ids = USED_IDS[picks]
    labels = ((picks >= len(USED_IDS) // 2).sum(dim=1) > LENGTH // 2).long()
    return Task(name="token-bag", train=(ids[:2400], labels[:2400]), val=(ids[2400:2700], labels[2400:2700]),
                test=(ids[2700:], labels[2700:]), teacher_architecture=TokenBag,
                student_architecture=lambda width, depth: TokenBag(width, depth), fingerprint="v1")
