"""The ``onnxruntime`` serving runtime: export to ONNX, then onnxruntime's own int8.

* 32 bits: the float model exported as is (onnxruntime applies its graph optimisations
  when the session opens).
* 8 bits, models with convolutions: ``quantize_static`` in QDQ format with per-channel
  int8 weights and uint8 activations calibrated on training rows.
* 8 bits, Linear-only models: ``quantize_dynamic`` (int8 weights, activations quantized
  per call), onnxruntime's counterpart of the torch dynamic path.

A candidate deployed on it is measured on onnxruntime, not on the torch model it came
from: accuracy, latency and memory all call the same ``InferenceSession`` a deployment
would. :class:`OnnxModule` keeps the serialized model as a uint8 buffer, so its "state
dict" size is the model's size and it pickles (Ray placement) without the live session,
which is re-created where it is used.

Its session's worker threads stop spinning when a run ends (``SESSION_CONFIG``). By
default they spin on after each run (about 0.05 CPU-seconds in the next half second
here), so whatever runs next on the cores -- the paired reference workload, or the
user's own request handling -- runs beside them: a 5.2 ms reference read 15-17 ms after a
2-thread block, and the digits table's
2-thread onnxruntime rows were scaled 1.8x too fast. Stopping the spin cost the 2-thread
session +3 % per back-to-back call (0.912 -> 0.941 ms) where turning spinning off
altogether cost +9 % (idle EPYC family 25 model 17, 2026-11-30); the deployment spec
names the setting, so the deployment serves as measured.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from slimsearch.evaluators.runtimes import ServingRuntime
from slimsearch.spaces import InvalidCandidate

CALIBRATION_BATCH = 64
SESSION_CONFIG = {"session.force_spinning_stop": "1"}
"""Session config entries every session is opened with (module docstring: why)."""


class OnnxModule(nn.Module):
    """A batch in the exported dtype in, float32 logits out, computed by an onnxruntime CPU session."""

    def __init__(self, model_bytes: bytes, threads: int | None = None):
        super().__init__()
        self.register_buffer("onnx_model", torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8))
        self.threads = threads
        self._session: Any = None

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
        for key, value in SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
        self._session = onnxruntime.InferenceSession(self.onnx_model.numpy().tobytes(), options,
                                                     providers=["CPUExecutionProvider"])
        return self._session

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_session": None}


class OnnxRuntime(ServingRuntime):
    name = "onnxruntime"
    suffix = ".onnx"
    export_suffix = ".onnx"

    def convert(self, model: nn.Module, bits: int, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"onnx_model": torch.frombuffer(bytearray(onnx_bytes(model, bits, calibration)), dtype=torch.uint8)}

    def from_buffers(self, buffers: dict[str, torch.Tensor]) -> OnnxModule:
        return OnnxModule(buffers["onnx_model"].numpy().tobytes())

    def quant_path(self, model: nn.Module, bits: int) -> str:
        if bits == 32:
            return "ort-fp32"
        return "ort-static-int8-qdq" if _has_conv(model) else "ort-dynamic-int8"

    def save(self, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
        assert isinstance(served, OnnxModule), "an onnxruntime candidate serves its ONNX model"
        return served.save(stem.with_suffix(self.suffix))

    def session_settings(self, threads: int) -> dict[str, object]:
        return {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "config_entries": SESSION_CONFIG}

    def load(self, path: Path, threads: int | None, compiled: bool) -> OnnxModule:
        return OnnxModule(path.read_bytes(), threads)

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        """The candidate's own ONNX file, or a float torch model exported."""
        written = model.save(path) if isinstance(model, OnnxModule) else write_onnx(model, example, path)
        return self.load(written, None, compiled=True)


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """ONNX via the dynamo exporter, batch dimension dynamic, one self-contained file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: "batch"},), verbose=False,
                          external_data=False)
    return path


def onnx_bytes(model: nn.Module, bits: int, calibration: torch.Tensor) -> bytes:
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


RUNTIME = OnnxRuntime()
