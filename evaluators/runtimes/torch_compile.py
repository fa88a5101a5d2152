"""The ``torch_compile`` serving runtime: a ``torch.export`` program compiled where it is served.

The artifact (``.pt2``) is the program with a dynamic batch dimension; the server loads
it and compiles it with inductor before its first request, so the probe's first call
includes compiling and its outputs are checked against the same program uncompiled.
Only float graphs export this way (int8 FX graphs do not ``torch.export``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from slimsearch.evaluators.runtimes import ServingRuntime


class CompiledModel(nn.Module):
    """An eager model to be served through ``torch.compile``: saved as a ``torch.export``
    program and compiled where it is served. In memory it computes the eager model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Program(nn.Module):
    """A loaded torch.export program, compiled or not. Such programs refuse ``.eval()`` and
    ``.train()`` (they keep the mode they were exported in), so it is held outside
    nn.Module's child registry, where evaluation code's ``model.eval()`` cannot reach it."""

    def __init__(self, program: nn.Module, compiled: bool):
        super().__init__()
        if compiled:
            # Inductor compiles with a pool of worker processes by default; inside a probe pinned
            # to one or two cores they would only compete with the model for those cores.
            os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
        self.__dict__["run"] = torch.compile(program, dynamic=False) if compiled else program

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


class TorchCompileRuntime(ServingRuntime):
    name = "torch_compile"
    suffix = ".pt2"
    export_suffix = ".pt2"
    compiles_when_served = True

    def wrap(self, quantized: nn.Module) -> nn.Module:
        return CompiledModel(quantized)

    def host_problem(self) -> str | None:
        """Inductor builds its CPU kernels with the C++ compiler named by ``CXX`` (default
        g++), which a slim host may lack. Reads the environment as inductor's config does,
        without importing inductor here."""
        compiler = os.environ.get("CXX", "g++")
        if shutil.which(compiler):
            return None
        return f"torch.compile needs a C++ compiler ('{compiler}' is not on PATH; e.g. apt install g++)"

    def save(self, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
        return _write_program(served, example, stem.with_suffix(self.suffix))

    def load(self, path: Path, threads: int | None, compiled: bool) -> nn.Module:
        return _Program(torch.export.load(str(path)).module(), compiled)

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.load(_write_program(model, example, path), None, compiled=False)


def _write_program(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``torch.export`` the model with a dynamic batch dimension and save the program."""
    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path))
    return path


RUNTIME = TorchCompileRuntime()
