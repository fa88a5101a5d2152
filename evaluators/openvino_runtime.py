"""Serving an OpenVINO IR behind the same interface as a torch module.

A candidate deployed on the ``openvino`` runtime is measured on OpenVINO: accuracy,
latency and memory all call a model compiled by ``openvino.Core`` with explicit threads
and an explicit inference precision (``f32``: on CPUs with BF16 support OpenVINO would
otherwise pick bfloat16 by itself and change the numerics silently). The IR (``.xml``
graph + ``.bin`` weights) is held as two uint8 buffers, so its "state dict" size is the
model's size and it pickles (Ray placement) without the compiled model. On disk the
serving artifact is one ``.ovz`` file (a zip of ``model.xml`` and ``model.bin``), so it
travels as one file; :meth:`OpenVinoModule.export_ir` writes the standard IR pair.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INFERENCE_PRECISION = "f32"
"""Recorded with every OpenVINO trial (tag ``inference_precision``)."""


class OpenVinoModule(nn.Module):
    """A batch in the exported dtype in, float32 logits out, computed by a compiled OpenVINO model."""

    def __init__(self, xml: bytes, weights: bytes, threads: int | None = None):
        super().__init__()
        self.register_buffer("ir_xml", torch.frombuffer(bytearray(xml), dtype=torch.uint8))
        self.register_buffer("ir_weights", torch.frombuffer(bytearray(weights) or bytearray(1), dtype=torch.uint8))
        self.threads = threads
        self.inference_precision = INFERENCE_PRECISION
        self._compiled: Any = None

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OpenVinoModule:
        """From an ``.ovz`` artifact, or a folder holding an exported ``model.xml`` + ``model.bin``."""
        path = Path(path)
        if path.is_dir():
            return cls((path / "model.xml").read_bytes(), (path / "model.bin").read_bytes(), threads)
        with zipfile.ZipFile(path) as archive:
            return cls(archive.read("model.xml"), archive.read("model.bin"), threads)

    def save(self, path: Path) -> Path:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("model.xml", self.ir_xml.numpy().tobytes())
            archive.writestr("model.bin", self.ir_weights.numpy().tobytes())
        return path

    def export_ir(self, folder: Path) -> Path:
        """The standard IR pair in ``folder`` (what OpenVINO tools and servers read)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.xml").write_bytes(self.ir_xml.numpy().tobytes())
        (folder / "model.bin").write_bytes(self.ir_weights.numpy().tobytes())
        return folder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiled = self._compiled or self._compile()
        output = compiled(x.detach().contiguous().numpy())[0]
        return torch.from_numpy(np.asarray(output, dtype=np.float32))

    def _compile(self) -> Any:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(model=self.ir_xml.numpy().tobytes().decode(),
                                weights=ov.Tensor(self.ir_weights.numpy()))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.inference_precision}
        if self.threads:
            # The probe pins the process to `threads` cores; OpenVINO must not start more.
            config["INFERENCE_NUM_THREADS"] = self.threads
        self._compiled = core.compile_model(model, "CPU", config)
        return self._compiled

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled": None}
