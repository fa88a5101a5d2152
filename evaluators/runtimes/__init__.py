"""Serving runtimes: one module per runtime behind one protocol, found by name.

A runtime turns a compressed torch model into what a deployment serves (wrapping the
torch-quantized graph, or converting the float model with its own int8), writes it as
one artifact file, loads that file to serve (in the probe, on Ray nodes, in the
registered MLflow model) and exports it for ``select``. Which runtimes exist, and what
each can serve, is the table in :mod:`slimsearch.spaces.runtimes`; each row names the
module here (or a user's own) whose ``RUNTIME`` implements :class:`ServingRuntime`.
Build, artifacts, export, selection and the driver ask these objects and never compare
runtime names, so a new runtime is its row plus its module.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, ClassVar

import torch
from torch import nn

from slimsearch.spaces.runtimes import PLUGINS_VARIABLE, RuntimeSpec, runtime_spec, runtime_specs


class ServingRuntime:
    """How one runtime serves a candidate. Subclasses set ``name``, ``suffix`` and
    ``export_suffix`` and override what differs from serving the torch graph as it is."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    """Of the serving artifact (``save``); ``load`` is chosen by it."""
    export_suffix: ClassVar[str]
    """Of the exported deployment (``export``); also loads by it."""
    compiles_when_served: ClassVar[bool] = False
    """Serving compiles the artifact's graph, so the probe checks the compiled outputs
    against the artifact loaded uncompiled (``load(..., compiled=False)``)."""

    @property
    def spec(self) -> RuntimeSpec:
        return runtime_spec(self.name)

    def wrap(self, quantized: nn.Module) -> nn.Module:
        """What this runtime serves for a torch-quantized model (runtimes that do not convert)."""
        return quantized

    def convert(self, model: nn.Module, bits: int, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
        """Its own artifact for the float ``model`` at ``bits`` as uint8 buffers (cached as a
        stage by the pipeline); only runtimes whose row says ``converts``."""
        raise NotImplementedError(f"the {self.name} runtime serves the torch graph; it does not convert")

    def from_buffers(self, buffers: dict[str, torch.Tensor]) -> nn.Module:
        """The serving module for what :meth:`convert` returned."""
        raise NotImplementedError(f"the {self.name} runtime serves the torch graph; it does not convert")

    def quant_path(self, model: nn.Module, bits: int) -> str:
        """Which of its paths serves ``model`` at ``bits`` (a converting runtime's ``quant_path``)."""
        raise NotImplementedError(f"the {self.name} runtime serves the torch graph; it does not convert")

    def conversion_problem(self, model: nn.Module, rows: torch.Tensor) -> str | None:
        """Why this architecture cannot be served here, found on an untrained copy before
        any training, or ``None``."""
        return None

    def host_problem(self) -> str | None:
        """Why this host cannot serve on this runtime (e.g. no compiler), or ``None``."""
        return None

    def session_settings(self, threads: int) -> dict[str, object]:
        """How its session is opened to serve on ``threads`` threads, where that is the
        runtime's own setting (the deployment spec repeats it: the deployment then serves
        as the candidate was measured)."""
        return {}

    def serving_tags(self, served: nn.Module) -> dict[str, str]:
        """Facts about how it serves worth a trial tag (e.g. OpenVINO's inference precision)."""
        return {}

    def save(self, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
        """Write the serving artifact at ``stem`` + :attr:`suffix` and return its path."""
        raise NotImplementedError

    def load(self, path: Path, threads: int | None, compiled: bool) -> nn.Module:
        """A serving artifact (or an export of this runtime) as a callable module."""
        raise NotImplementedError

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        """Write ``model`` (served on any runtime that does not convert, or on this one) in
        this runtime's export format at ``path`` and return the export, loaded back."""
        raise NotImplementedError


def serving_runtime(name: str) -> ServingRuntime:
    """The implementation of the runtime ``name`` (its row's module's ``RUNTIME``)."""
    runtime = importlib.import_module(runtime_spec(name).module).RUNTIME
    assert isinstance(runtime, ServingRuntime) and runtime.name == name, f"{name}: RUNTIME is not its runtime"
    return runtime


def exporting_runtime(fmt: str) -> ServingRuntime | None:
    """The runtime whose deployments use export format ``fmt``, or ``None``."""
    return next((serving_runtime(s.name) for s in runtime_specs() if s.export_format == fmt), None)


def save_artifact(runtime: str, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
    """Write ``served`` as the artifact its runtime serves and return the file."""
    return serving_runtime(runtime).save(served, example, stem)


def load_artifact(path: str | Path, threads: int | None = None, compiled: bool = True) -> nn.Module:
    """A serving artifact (or exported deployment) as a callable module, on the runtime its
    suffix names (the longest match: ``.pt2`` before ``.pt``).

    ``compiled=False`` returns a compiled runtime's graph uncompiled: the reference its
    compiled form is checked against, and what accuracy is computed on (the same graph;
    compiling it for every evaluation batch shape would cost seconds per shape).
    """
    return runtime_for_artifact(path).load(Path(path), threads, compiled)


def runtime_for_artifact(path: str | Path) -> ServingRuntime:
    name = str(path)
    matches = [(len(suffix), runtime) for runtime in map(serving_runtime, (s.name for s in runtime_specs()))
               for suffix in (runtime.suffix, runtime.export_suffix) if name.endswith(suffix)]
    if not matches:
        raise LookupError(f"no serving runtime loads '{Path(name).name}' (by its suffix); a runtime of your own must "
                          f"be named in {PLUGINS_VARIABLE} in every process that loads its artifacts")
    return max(matches, key=lambda match: match[0])[1]


__all__ = ["ServingRuntime", "exporting_runtime", "load_artifact", "runtime_for_artifact", "save_artifact",
           "serving_runtime"]
