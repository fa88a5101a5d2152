"""The ``onnxruntime`` serving runtime: export to ONNX, then onnxruntime's own int8.

* 32 bits: the float model exported as is (onnxruntime applies its graph optimisations
  when the session opens).
* 8 bits, models with convolutions: ``quantize_static`` in QDQ format with per-channel
  int8 weights and uint8 activations calibrated on training rows.
* 8 bits, Linear-only models: ``quantize_dynamic`` (int8 weights, activations quantized
  per call), onnxruntime's counterpart of the torch dynamic path.

Other bit widths are not offered on this runtime (the space only pairs it with 32 and
8, see ``spaces.sampling``). The result is an :class:`OnnxModule`, so accuracy, latency
and memory are all measured on onnxruntime, and its size is the ONNX file's.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from slimsearch.evaluators.onnx_runtime import OnnxModule
from slimsearch.pipelines.export import write_onnx
from slimsearch.spaces import InvalidCandidate

CALIBRATION_BATCH = 64


def onnxruntime_model(model: nn.Module, bits: int, calibration: torch.Tensor) -> tuple[OnnxModule, str]:
    """``(serving module, path tag)`` for ``model`` on onnxruntime at ``bits``."""
    return OnnxModule(onnxruntime_bytes(model, bits, calibration)), onnxruntime_path(model, bits)


def onnxruntime_path(model: nn.Module, bits: int) -> str:
    """Which onnxruntime path serves ``model`` at ``bits`` (recorded as the trial's ``quant_path``)."""
    if bits == 32:
        return "ort-fp32"
    return "ort-static-int8-qdq" if _has_conv(model) else "ort-dynamic-int8"


def onnxruntime_bytes(model: nn.Module, bits: int, calibration: torch.Tensor) -> bytes:
    """The serialized ONNX model onnxruntime serves (exported, then quantized at 8 bits)."""
    if bits not in (32, 8):
        raise InvalidCandidate(f"the onnxruntime runtime serves 32 or 8 bits, not {bits}")
    with tempfile.TemporaryDirectory(prefix="slimsearch-ort-") as workdir:
        fp32 = Path(workdir) / "model.onnx"
        try:
            write_onnx(model.eval(), calibration[:2], fp32)  # a batch of 1 would be specialised as a constant
        except Exception as exc:  # a property of the model (an op the exporter lacks), not a crash
            first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise InvalidCandidate(f"cannot export this model to ONNX for onnxruntime: {first_line}") from exc
        if bits == 32:
            return fp32.read_bytes()
        int8 = Path(workdir) / "model.int8.onnx"
        with _quiet_root_logger():  # both quantizers advise pre-processing on the root logger, every call
            if _has_conv(model):
                _static_int8(fp32, int8, calibration)
            else:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
        return int8.read_bytes()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _static_int8(source: Path, target: Path, calibration: torch.Tensor) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self, input_name: str):
            self.batches = iter(
                {input_name: calibration[i : i + CALIBRATION_BATCH].numpy()}
                for i in range(0, len(calibration), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    import onnx

    input_name = onnx.load(str(source)).graph.input[0].name
    quantize_static(source, target, Batches(input_name), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
