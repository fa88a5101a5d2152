"""Built-in ``digits-transformer`` task: the digits images read as sequences of row tokens.

Each 16x16 image (the ``digits`` task's data, fully offline) is 16 tokens of 16 pixels.
The model is a small pre-norm Transformer encoder written here, so it is Linear-heavy:
dynamic int8 and tensor parallelism (column/row-sharded Linear pairs) matter for it,
unlike for the convolutional ``digits`` task.

Attention derives its head count from the width of its projections at run time
(``heads = q.shape[-1] // HEAD_DIM``). That keeps the code correct when tensor
parallelism gives each rank half of the query/key/value columns (half the heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimsearch.pipelines.digits import load_splits
from slimsearch.pipelines.task import Task

HEAD_DIM = 16
TEACHER_WIDTH, TEACHER_DEPTH = 1.0, 2
BASE_MODEL_DIM, BASE_FFN_DIM = 64, 256
MAX_DEPTH = 3


class SelfAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, -1, HEAD_DIM).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.out(mixed.transpose(1, 2).reshape(batch, tokens, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), SelfAttention(dim)
        self.norm2, self.ffn = nn.LayerNorm(dim), FeedForward(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class DigitsTransformer(nn.Module):
    """Row tokens -> linear embedding + learned positions -> ``depth`` encoder blocks -> mean -> head."""

    def __init__(self, width: float = TEACHER_WIDTH, depth: int = TEACHER_DEPTH, side: int = 16, num_classes: int = 10):
        super().__init__()
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"digits transformer depth must be 1..{MAX_DEPTH}, got {depth}")
        dim = max(HEAD_DIM, round(BASE_MODEL_DIM * width / HEAD_DIM) * HEAD_DIM)  # whole heads
        hidden = max(HEAD_DIM, round(BASE_FFN_DIM * width))
        self.embed = nn.Linear(side, dim)
        self.positions = nn.Parameter(torch.zeros(1, side, dim))
        self.blocks = nn.Sequential(*(EncoderBlock(dim, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1, 2)) + self.positions  # (batch, 1, rows, cols) -> (batch, rows, dim)
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))

    def feature_stages(self) -> list[str]:
        """Each encoder block's output tokens (16 rows x model dim), for feature distillation."""
        return [f"blocks.{index}" for index in range(len(self.blocks))]

    def tensor_parallel_plan(self, degree: int) -> dict[str, str]:
        """Megatron-style sharding: q/k/v and fc1 by output columns, out and fc2 by input
        rows, so each block needs one all-reduce per sub-layer. Ranks must get whole heads."""
        heads = self.head.in_features // HEAD_DIM
        if heads % degree:
            raise ValueError(f"{heads} attention heads do not split evenly over {degree} ranks")
        plan: dict[str, str] = {}
        for index in range(len(self.blocks)):
            prefix = f"blocks.{index}"
            plan |= {f"{prefix}.attn.{name}": "colwise" for name in ("q", "k", "v")}
            plan |= {f"{prefix}.attn.out": "rowwise", f"{prefix}.ffn.fc1": "colwise", f"{prefix}.ffn.fc2": "rowwise"}
        return plan

    @property
    def unprunable(self) -> list[str]:
        """Everything but the feed-forward hidden width (``fc1`` outputs): the residual
        stream couples every block, and the attention projections must keep whole heads."""
        names = ["embed", "norm", "head"]
        for index in range(len(self.blocks)):
            block = f"blocks.{index}"
            names += [f"{block}.attn.{name}" for name in ("q", "k", "v", "out")]
            names += [f"{block}.norm1", f"{block}.norm2", f"{block}.ffn.fc2"]
        return names


def make_task(seed: int = 0) -> Task:
    train, val, test = load_splits(seed)
    return Task(
        name="digits-transformer",
        train=train,
        val=val,
        test=test,
        teacher_architecture=DigitsTransformer,
        student_architecture=lambda width, depth: DigitsTransformer(width=width, depth=depth),
        fingerprint="rows16-prenorm-v1",
    )
