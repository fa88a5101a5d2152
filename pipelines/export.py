"""Export a compressed model for deployment, and prove the export computes the same thing.

Each export format belongs to a serving runtime (``evaluators.runtimes``; the formats are
the ``export_format`` of the rows in ``spaces.runtimes``): ``torchscript`` works for
every candidate, int8 FX graphs included; ``torch_export``, ``onnx`` and ``openvino``
take float graphs. A candidate served on a runtime that converts the model itself
(onnxruntime, OpenVINO) exports only as that runtime's format: its own artifact.
Every export is loaded back and its outputs compared with the in-memory model on the
same batch; a mismatch beyond the tolerance is an error, not a warning.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from slimsearch.evaluators.runtimes import exporting_runtime
from slimsearch.spaces import DEFAULT_RUNTIME, export_formats, runtime_spec
from slimsearch.spaces.errors import SlimsearchError

# int8 and 16-bit graphs may round differently once re-traced; logits are compared with this
# absolute tolerance, which is far below any decision-changing difference on normalised logits.
ATOL = 1e-3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExportError(SlimsearchError, RuntimeError):
    """A format that cannot represent this model, or an export that does not match it."""


def export_model(model: nn.Module, served_on: str, example: torch.Tensor, fmt: str, stem: Path) -> Path:
    """Write ``model`` (as served on the runtime ``served_on``) in ``fmt`` next to ``stem``
    and verify it; return the file path."""
    exporter = exporting_runtime(fmt)
    if exporter is None:
        raise ExportError(f"unknown export format '{fmt}'; choose from {', '.join(export_formats())}")
    served = runtime_spec(served_on)
    if served.converts and fmt != served.export_format:
        raise ExportError(f"this candidate is deployed on {served.name}, so its artifact is {served.export_format}, "
                          f"not {fmt}; export it with --format {served.export_format}")
    path = stem.with_suffix(exporter.export_suffix)
    model = model.eval()
    with torch.no_grad():
        expected = model(example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation, tracer and exporter chatter
            actual = exporter.export(model, example, path)(example)
    except Exception as exc:
        first_line = _ANSI.sub("", str(exc)).strip().splitlines()[0][:200]
        raise ExportError(f"{fmt} export failed for this model ({type(exc).__name__}: {first_line}); "
                          f"try --format {runtime_spec(DEFAULT_RUNTIME).export_format}") from exc
    difference = float((actual.detach().float() - expected.detach().float()).abs().max())
    if difference > ATOL:
        raise ExportError(f"{fmt} export differs from the compressed model by {difference:.2e} (> {ATOL:g})")
    return path
