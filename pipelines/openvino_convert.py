"""The ``openvino`` serving runtime: convert to OpenVINO IR, then NNCF's int8.

* 32 bits: ``openvino.convert_model`` of the torch model (traced on a calibration row),
  float32 weights kept (no fp16 compression).
* 8 bits: NNCF post-training quantization of that IR, calibrated on the task's
  calibration rows (``model_type=TRANSFORMER`` for models with attention, which keeps
  the accuracy-critical softmax/layer-norm paths in float). Weights are stored int8.

Conversion takes seconds, so the IR is a cached stage per base model and bit width, like
the onnxruntime export. A model the converter cannot take is an ``InvalidCandidate`` with
the converter's reason.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import rich
import torch
from torch import nn

from slimsearch.evaluators.families import transformer_layers
from slimsearch.evaluators.openvino_runtime import OpenVinoModule
from slimsearch.spaces import InvalidCandidate

CALIBRATION_BATCH = 64


def openvino_path(bits: int) -> str:
    """Which OpenVINO path serves a model at ``bits`` (the trial's ``quant_path``)."""
    return "openvino-fp32" if bits == 32 else "openvino-nncf-int8"


def openvino_ir(model: nn.Module, bits: int, calibration: torch.Tensor) -> tuple[bytes, bytes]:
    """``(xml, bin)`` of the IR OpenVINO serves for ``model`` at ``bits``."""
    import openvino as ov

    if bits not in (32, 8):
        raise InvalidCandidate(f"the openvino runtime serves 32 or 8 bits, not {bits}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings of the PyTorch frontend
            converted = ov.convert_model(model.eval(), example_input=calibration[:1])
    except Exception as exc:  # a property of the model (an op the converter lacks), not a crash
        raise InvalidCandidate(f"cannot convert this model to OpenVINO: {_reason(exc)}") from exc
    if bits == 8:
        converted = _nncf_int8(converted, calibration, transformer=bool(transformer_layers(model)))
    with tempfile.TemporaryDirectory(prefix="slimsearch-ov-") as workdir:
        xml = Path(workdir) / "model.xml"
        ov.save_model(converted, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def _reason(exc: BaseException) -> str:
    """The converter's message and, where it wraps another error (tracing failed), the root cause."""
    def first_line(error: BaseException) -> str:
        return str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__

    root = exc
    while (inner := root.__cause__ or root.__context__) is not None:
        root = inner
    return first_line(exc) if root is exc else f"{first_line(exc)} ({type(root).__name__}: {first_line(root)})"


def openvino_model(model: nn.Module, bits: int, calibration: torch.Tensor) -> OpenVinoModule:
    return OpenVinoModule(*openvino_ir(model, bits, calibration))


def _nncf_int8(converted: object, calibration: torch.Tensor, transformer: bool) -> object:
    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)  # progress bars and subset-size notes
    batches = [calibration[i : i + CALIBRATION_BATCH].numpy() for i in range(0, len(calibration), CALIBRATION_BATCH)]
    options = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    with _rich_default_console_quiet():
        return nncf.quantize(converted, nncf.Dataset(batches), subset_size=len(batches), **options)


@contextlib.contextmanager
def _rich_default_console_quiet() -> Iterator[None]:
    """NNCF draws its progress bars on rich's default console (stdout), over the search's
    own display; slimsearch prints through consoles of its own, so this one may be muted."""
    console = rich.get_console()
    saved = dict(console.__dict__)
    rich.reconfigure(quiet=True)  # replaces the default console's settings (rich's public API)
    try:
        yield
    finally:
        console.__dict__.update(saved)
