"""A serving runtime of the tests' own, added the way a user adds one: this module alone.

It registers its row and defines ``RUNTIME``; naming it in ``SLIMSEARCH_RUNTIMES`` makes
every slimsearch process (the search, its serving probes, ``select``) know it. It serves
TorchScript frozen for inference (``torch.jit.freeze``: weights folded into the graph)
from ``.toy`` files, so a trial on it provably went through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from slimsearch.evaluators.runtimes import ServingRuntime
from slimsearch.evaluators.runtimes.torchscript import trace
from slimsearch.spaces import RuntimeSpec, register

SPEC = register(RuntimeSpec("toy", __name__, bits=(32,), parallel=False, qat=False, converts=False,
                            export_format="frozen_torchscript", export_bits=(32,),
                            description="TorchScript frozen for inference (a test's own runtime)"))


class FrozenTorchScript(ServingRuntime):
    name = "toy"
    suffix = ".toy"
    export_suffix = ".frozen.toy"

    def save(self, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
        return _frozen(served, example, stem.with_suffix(self.suffix))

    def load(self, path: Path, threads: int | None, compiled: bool) -> nn.Module:
        return torch.jit.load(str(path)).eval()

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.load(_frozen(model, example, path), None, compiled=True)


def _frozen(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    torch.jit.save(torch.jit.freeze(trace(model, example)), str(path))
    return path


RUNTIME = FrozenTorchScript()
