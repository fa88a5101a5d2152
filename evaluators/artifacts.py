"""Serving artifacts: one file per candidate, in the format of the runtime it is deployed on.

* ``torch`` runtime: TorchScript (every candidate can be traced, int8 FX graphs included);
* ``onnxruntime``: the candidate's ONNX file, served by an onnxruntime session;
* ``torch_compile``: a ``torch.export`` program (``.pt2``, batch dimension dynamic), which
  the server loads and compiles with inductor before its first request.

The file suffix says which runtime serves it, so the probe, the accuracy evaluator, Ray
nodes and the registered MLflow model all load an artifact the same way
(:func:`load_artifact`) and every number is taken on the runtime that would be deployed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from slimsearch.evaluators.onnx_runtime import OnnxModule
from slimsearch.evaluators.openvino_runtime import OpenVinoModule


class CompiledRuntime(nn.Module):
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


def missing_compiler() -> str | None:
    """Why torch.compile cannot serve here, or ``None``: inductor builds its CPU kernels
    with the C++ compiler named by ``CXX`` (default g++), which a slim host may lack.
    Reads the environment as inductor's config does, without importing inductor here."""
    compiler = os.environ.get("CXX", "g++")
    return None if shutil.which(compiler) else f"torch.compile needs a C++ compiler ('{compiler}' is not on PATH)"


def save_artifact(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write what ``model``'s runtime serves next to ``path`` and return the file: ONNX for
    onnxruntime, a torch.export program for torch_compile, else TorchScript at ``path``."""
    if isinstance(model, OnnxModule):
        return model.save(path.with_suffix(".onnx"))
    if isinstance(model, OpenVinoModule):
        return model.save(path.with_suffix(".ovz"))
    if isinstance(model, CompiledRuntime):
        return write_program(model.model, example, path.with_suffix(".pt2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation + tracer warnings on quantized graphs
        with torch.inference_mode(False), torch.no_grad():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def write_program(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``torch.export`` the model with a dynamic batch dimension and save the program."""
    with torch.inference_mode(False), torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path))
    return path


def load_artifact(path: str | Path, threads: int | None = None, compiled: bool = True) -> nn.Module:
    """A serving artifact as a callable module, on the runtime its suffix names.

    ``compiled=False`` returns a torch.export program uncompiled: the reference its
    compiled form is checked against, and what accuracy is computed on (the same graph;
    compiling it for every evaluation batch shape would cost seconds per shape).
    """
    path = str(path)
    if path.endswith(".onnx"):
        return OnnxModule.load(path, threads)
    if path.endswith((".ovz", ".openvino")):  # the serving artifact, or an exported IR folder
        return OpenVinoModule.load(path, threads)
    if path.endswith(".pt2"):
        return _Program(torch.export.load(path).module(), compiled)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still loads fine
        return torch.jit.load(path).eval()
