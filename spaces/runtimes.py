"""The deployment dimension as one table: serving runtimes and parallel strategies.

What each runtime serves (bit widths, single process or ranks, QAT), the artifact it
ships and the export format a deployment of it uses; what each parallel strategy is.
The space, the candidates' rejection reasons, the artifact loader and ``select`` all
read these rows, so adding a runtime is adding a row (and its loader), not editing ten
``if`` chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Runtime = Literal["torch", "onnxruntime", "torch_compile", "openvino"]
Strategy = Literal["single", "data_parallel", "tensor_parallel", "pipeline_parallel"]


@dataclass(frozen=True)
class RuntimeSpec:
    name: Runtime
    bits: tuple[int, ...]
    """Bit widths this runtime serves (None of them simulated unless the bits are < 8)."""
    parallel: bool
    """Whether it can serve under a multi-rank strategy (else single process only)."""
    qat: bool
    """Whether it serves quantization-aware-trained int8 graphs."""
    suffix: str
    """Artifact file suffix: the probe, accuracy, Ray nodes and the registry load by it."""
    export_format: str
    """What ``select`` exports and registers for a trial served on this runtime."""
    description: str

    def rejection(self, strategy: str, bits: int, qat: bool) -> str | None:
        """Why a candidate with these choices cannot be served on this runtime, or ``None``."""
        if (strategy != "single" and not self.parallel) or bits not in self.bits or (qat and not self.qat):
            allowed = "float32" if self.bits == (32,) else " or ".join(f"{b}-bit" for b in self.bits)
            return (f"the {self.name} runtime serves {'' if self.parallel else 'single-process '}{allowed} models"
                    f"{'' if self.qat else ' without QAT'}; use runtime torch")
        return None


RUNTIMES: dict[str, RuntimeSpec] = {spec.name: spec for spec in (
    RuntimeSpec("torch", (32, 16, 8, 6, 4, 3, 2), parallel=True, qat=True, suffix=".pt", export_format="torchscript",
                description="TorchScript trace (every candidate can be traced, int8 FX graphs included)"),
    RuntimeSpec("onnxruntime", (32, 8), parallel=False, qat=False, suffix=".onnx", export_format="onnx",
                description="dynamo ONNX export on an onnxruntime session; onnxruntime's own int8"),
    RuntimeSpec("torch_compile", (32,), parallel=False, qat=False, suffix=".pt2", export_format="torch_export",
                description="torch.export program compiled by inductor where served (needs a C++ compiler)"),
    RuntimeSpec("openvino", (32, 8), parallel=False, qat=False, suffix=".ovz", export_format="openvino",
                description="OpenVINO IR (convert_model; NNCF int8), compiled with explicit threads and f32 precision"),
)}
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
MULTI_RANK: tuple[Strategy, ...] = tuple(s for s in STRATEGIES if s != "single")
assert set(RUNTIMES) == set(get_args(Runtime)), "every runtime has a row"
