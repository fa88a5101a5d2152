"""Serving an ONNX model with onnxruntime behind the same interface as a torch module.

A candidate deployed on the ``onnxruntime`` runtime is measured on onnxruntime, not on
the torch model it came from: accuracy, latency and memory all call the same
``InferenceSession`` a deployment would. :class:`OnnxModule` keeps the serialized model
as a uint8 buffer, so its "state dict" size is the model's size and it pickles (Ray
placement) without the live session, which is re-created where it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class OnnxModule(nn.Module):
    """A batch in the exported dtype in, float32 logits out, computed by an onnxruntime CPU session."""

    def __init__(self, model_bytes: bytes, threads: int | None = None):
        super().__init__()
        self.register_buffer("onnx_model", torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8))
        self.threads = threads
        self._session: Any = None

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OnnxModule:
        return cls(Path(path).read_bytes(), threads)

    def save(self, path: Path) -> Path:
        path.write_bytes(self.onnx_model.numpy().tobytes())
        return path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self._session or self._open()
        output = session.run(None, {session.get_inputs()[0].name: x.detach().contiguous().numpy()})[0]
        return torch.from_numpy(np.asarray(output, dtype=np.float32))

    def _open(self) -> Any:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if self.threads:
            # The probe pins the process to `threads` cores; onnxruntime must not start more.
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(self.onnx_model.numpy().tobytes(), options,
                                                     providers=["CPUExecutionProvider"])
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}
