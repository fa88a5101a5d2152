"""The ``torch`` serving runtime: the torch graph as it was compressed, traced to TorchScript.

Every candidate can be traced (int8 FX graphs and fake-quant included), so this is the
runtime multi-rank strategies and QAT serve on, and the default of stored candidates.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from slimsearch.evaluators.runtimes import ServingRuntime


class TorchScriptRuntime(ServingRuntime):
    name = "torch"
    suffix = ".pt"
    export_suffix = ".ts.pt"

    def save(self, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
        path = stem.with_suffix(self.suffix)
        torch.jit.save(trace(served, example), str(path))
        return path

    def load(self, path: Path, threads: int | None, compiled: bool) -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still loads fine
            return torch.jit.load(str(path)).eval()

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        torch.jit.save(trace(model, example), str(path))
        return self.load(path, None, compiled=True)


def trace(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation + tracer warnings on quantized graphs
        with torch.inference_mode(False), torch.no_grad():
            return torch.jit.trace(model.eval(), example, check_trace=False)


RUNTIME = TorchScriptRuntime()
