"""The deployment dimension as one table: serving runtimes and parallel strategies.

Each row says what a runtime serves (bit widths, single process or ranks, QAT), whether
it builds its own artifact from the float model (its own export and int8), the export
format a deployment of it uses, and the module that implements it (a
:class:`slimsearch.evaluators.runtimes.ServingRuntime`). The space, the candidates'
rejection reasons, the build, the artifact loader, ``select`` and the driver all read
these rows and never compare runtime names, so adding a runtime is adding a row and its
module.

A runtime of your own is a module that calls :func:`register` with its row and defines
``RUNTIME``; name the module in the ``SLIMSEARCH_RUNTIMES`` environment variable
(comma-separated), which every slimsearch process reads (probes, workers, Ray nodes on
this host inherit it), so every process that loads its artifacts knows it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Literal, get_args

from slimsearch.spaces.errors import SlimsearchError

Strategy = Literal["single", "data_parallel", "tensor_parallel", "pipeline_parallel"]
DEFAULT_RUNTIME = "torch"
"""The runtime every candidate can be served on (TorchScript): stored candidates without a
runtime ran on it, and the teacher's anchors use it."""
DEFAULT_RUNTIMES = (DEFAULT_RUNTIME, "onnxruntime")
"""Searched where a config does not list ``space.parallel.runtimes``."""
PLUGINS_VARIABLE = "SLIMSEARCH_RUNTIMES"


class UnknownRuntime(SlimsearchError, ValueError):
    """A runtime name no row (built-in or registered) carries."""


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    module: str
    """The module implementing it: its ``RUNTIME`` wraps, converts, saves, loads and exports."""
    bits: tuple[int, ...]
    """Bit widths this runtime serves (None of them simulated unless the bits are < 8)."""
    parallel: bool
    """Whether it can serve under a multi-rank strategy (else single process only)."""
    qat: bool
    """Whether it serves quantization-aware-trained int8 graphs."""
    converts: bool
    """Builds its own artifact from the float model (its own export and int8) instead of
    serving the torch-quantized graph; such an artifact exports only as ``export_format``."""
    export_format: str
    """What ``select`` exports and registers for a trial served on this runtime."""
    export_bits: tuple[int, ...]
    """Bit widths of a torch-served graph that ``export_format`` can represent (int8 FX
    graphs trace to TorchScript only)."""
    description: str
    packages: tuple[str, ...] = ()
    """The distributions it serves with besides torch (their versions go into the deployment spec)."""

    def rejection(self, strategy: str, bits: int, qat: bool) -> str | None:
        """Why a candidate with these choices cannot be served on this runtime, or ``None``."""
        if (strategy != "single" and not self.parallel) or bits not in self.bits or (qat and not self.qat):
            allowed = "float32" if self.bits == (32,) else " or ".join(f"{b}-bit" for b in self.bits)
            return (f"the {self.name} runtime serves {'' if self.parallel else 'single-process '}{allowed} models"
                    f"{'' if self.qat else ' without QAT'}; use runtime {DEFAULT_RUNTIME}")
        return None


_IMPLEMENTATIONS = "slimsearch.evaluators.runtimes"
_FLOAT = (32, 16)
_RUNTIMES: dict[str, RuntimeSpec] = {spec.name: spec for spec in (
    RuntimeSpec("torch", f"{_IMPLEMENTATIONS}.torchscript", (32, 16, 8, 6, 4, 3, 2), parallel=True, qat=True,
                converts=False, export_format="torchscript", export_bits=(32, 16, 8, 6, 4, 3, 2),
                description="TorchScript trace (every candidate can be traced, int8 FX graphs included)"),
    RuntimeSpec("onnxruntime", f"{_IMPLEMENTATIONS}.onnxruntime", (32, 8), parallel=False, qat=False,
                converts=True, export_format="onnx", export_bits=_FLOAT,
                description="dynamo ONNX export on an onnxruntime session; onnxruntime's own int8",
                packages=("onnx", "onnxruntime")),
    RuntimeSpec("torch_compile", f"{_IMPLEMENTATIONS}.torch_compile", (32,), parallel=False, qat=False,
                converts=False, export_format="torch_export", export_bits=_FLOAT,
                description="torch.export program compiled by inductor where served (needs a C++ compiler)"),
    RuntimeSpec("openvino", f"{_IMPLEMENTATIONS}.openvino", (32, 8), parallel=False, qat=False,
                converts=True, export_format="openvino", export_bits=_FLOAT,
                description="OpenVINO IR (convert_model; NNCF int8), compiled with explicit threads and f32 precision",
                packages=("openvino", "nncf")),
)}
_plugins_loaded = False
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
MULTI_RANK: tuple[Strategy, ...] = tuple(s for s in STRATEGIES if s != "single")


def register(spec: RuntimeSpec) -> RuntimeSpec:
    """Add a runtime's row (idempotent for the same row: a module may be imported twice)."""
    if _RUNTIMES.get(spec.name, spec) != spec:
        raise UnknownRuntime(f"runtime '{spec.name}' is registered twice with different rows; rename one")
    _RUNTIMES[spec.name] = spec
    return spec


def runtime_specs() -> list[RuntimeSpec]:
    """Every row: the built-in ones, then those of the modules in ``SLIMSEARCH_RUNTIMES``."""
    _load_plugins()
    return list(_RUNTIMES.values())


def runtime_spec(name: str) -> RuntimeSpec:
    _load_plugins()
    if name not in _RUNTIMES:
        raise UnknownRuntime(f"unknown runtime '{name}'; choose from {', '.join(_RUNTIMES)} (a runtime of your own: "
                             f"name its module in {PLUGINS_VARIABLE})")
    return _RUNTIMES[name]


def export_formats() -> list[str]:
    return list(dict.fromkeys(spec.export_format for spec in runtime_specs()))


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UnknownRuntime(f"{PLUGINS_VARIABLE} names '{module}', which does not import ({exc}); "
                                 "fix the name or put its package on the path") from exc
