"""Export a compressed model for deployment, and prove the export computes the same thing.

Formats: ``torchscript`` (works for every candidate, int8 FX graphs included),
``torch_export`` (``torch.export`` program; int8 FX graphs are not exportable this way),
``onnx`` (dynamo exporter, verified with onnxruntime; float models only, or the
candidate's own ONNX file when it is deployed on onnxruntime) and ``openvino`` (an IR
folder, ``model.xml`` + ``model.bin``: converted from a float model, or the candidate's
own IR when it is deployed on OpenVINO).
Every export is loaded back and its outputs compared with the in-memory model on the
same batch; a mismatch beyond the tolerance is an error, not a warning.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from slimsearch.spaces.errors import SlimsearchError
from slimsearch.evaluators.artifacts import load_artifact, write_program
from slimsearch.evaluators.onnx_runtime import OnnxModule
from slimsearch.evaluators.openvino_runtime import OpenVinoModule
from slimsearch.pipelines.openvino_convert import openvino_model

FORMATS = ("torchscript", "torch_export", "onnx", "openvino")
SUFFIX = {"torchscript": ".ts.pt", "torch_export": ".pt2", "onnx": ".onnx", "openvino": ".openvino"}
# int8 and 16-bit graphs may round differently once re-traced; logits are compared with this
# absolute tolerance, which is far below any decision-changing difference on normalised logits.
ATOL = 1e-3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(SlimsearchError, RuntimeError):
    """A format that cannot represent this model, or an export that does not match it."""


def export_model(model: nn.Module, example: torch.Tensor, fmt: str, stem: Path) -> Path:
    """Write ``model`` in ``fmt`` next to ``stem`` and verify it; return the file path."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    if isinstance(model, OnnxModule) and fmt != "onnx":
        raise ExportError(f"this candidate is deployed on onnxruntime, so its artifact is ONNX, not {fmt}; "
                          "export it with --format onnx")
    if isinstance(model, OpenVinoModule) and fmt != "openvino":
        raise ExportError(f"this candidate is deployed on OpenVINO, so its artifact is an IR, not {fmt}; "
                          "export it with --format openvino")
    path = stem.with_suffix(SUFFIX[fmt])
    model = model.eval()
    with torch.no_grad():
        expected = model(example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation, tracer and exporter chatter
            load = _WRITERS[fmt](model, example, path)
            actual = load(example)
    except ExportError:
        raise
    except Exception as exc:
        first_line = _ANSI.sub("", str(exc)).strip().splitlines()[0][:200]
        raise ExportError(f"{fmt} export failed for this model ({type(exc).__name__}: {first_line}); "
                          "try --format torchscript") from exc
    difference = float((actual.detach().float() - expected.detach().float()).abs().max())
    if difference > ATOL:
        raise ExportError(f"{fmt} export differs from the compressed model by {difference:.2e} (> {ATOL:g})")
    return path


def _torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(path))
    loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


def _torch_export(model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    return load_artifact(write_program(model, example, path), compiled=False)


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """ONNX via the dynamo exporter, batch dimension dynamic, one self-contained file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: "batch"},), verbose=False,
                          external_data=False)
    return path


def _onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    written = model.save(path) if isinstance(model, OnnxModule) else write_onnx(model, example, path)
    return OnnxModule.load(written)


def _openvino(model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The IR pair (``model.xml`` + ``model.bin``) in the folder ``path``; float models convert here."""
    served = model if isinstance(model, OpenVinoModule) else openvino_model(model, 32, example)
    return OpenVinoModule.load(served.export_ir(path))


_WRITERS = {"torchscript": _torchscript, "torch_export": _torch_export, "onnx": _onnx, "openvino": _openvino}
