"""The ``openvino`` serving runtime: convert to OpenVINO IR, then NNCF's int8.

* 32 bits: ``openvino.convert_model`` of the torch model (traced on a calibration row),
  float32 weights kept (no fp16 compression).
* 8 bits: NNCF post-training quantization of that IR, calibrated on the task's
  calibration rows (``model_type=TRANSFORMER`` for models with attention, which keeps
  the accuracy-critical softmax/layer-norm paths in float). Weights are stored int8.

A candidate deployed on it is measured on OpenVINO: accuracy, latency and memory all
call a model compiled by ``openvino.Core`` with explicit threads and an explicit
inference precision (``f32``: on CPUs with BF16 support OpenVINO would otherwise pick
bfloat16 by itself and change the numerics silently). The IR (``.xml`` graph + ``.bin``
weights) is held as two uint8 buffers, so its "state dict" size is the model's size and
it pickles (Ray placement) without the compiled model. On disk the serving artifact is
one ``.ovz`` file (a zip of ``model.xml`` and ``model.bin``), so it travels as one file;
the export is the standard IR pair in a folder. A model the converter cannot take is an
``InvalidCandidate`` with the converter's reason, found before training.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import rich
import torch
from torch import nn

from slimsearch.evaluators.families import transformer_layers
from slimsearch.evaluators.runtimes import ServingRuntime
from slimsearch.spaces import InvalidCandidate

CALIBRATION_BATCH = 64
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


class OpenVinoRuntime(ServingRuntime):
    name = "openvino"
    suffix = ".ovz"
    export_suffix = ".openvino"

    def convert(self, model: nn.Module, bits: int, calibration: torch.Tensor) -> dict[str, torch.Tensor]:
        xml, weights = openvino_ir(model, bits, calibration)
        return {name: torch.frombuffer(bytearray(data), dtype=torch.uint8) for name, data in
                (("xml", xml), ("bin", weights))}

    def from_buffers(self, buffers: dict[str, torch.Tensor]) -> OpenVinoModule:
        return OpenVinoModule(buffers["xml"].numpy().tobytes(), buffers["bin"].numpy().tobytes())

    def quant_path(self, model: nn.Module, bits: int) -> str:
        return "openvino-fp32" if bits == 32 else "openvino-nncf-int8"

    def conversion_problem(self, model: nn.Module, rows: torch.Tensor) -> str | None:
        try:
            openvino_ir(model, 32, rows)
        except InvalidCandidate as exc:
            return str(exc)
        return None

    def serving_tags(self, served: nn.Module) -> dict[str, str]:
        return {"inference_precision": INFERENCE_PRECISION}

    def save(self, served: nn.Module, example: torch.Tensor, stem: Path) -> Path:
        assert isinstance(served, OpenVinoModule), "an openvino candidate serves its IR"
        path = stem.with_suffix(self.suffix)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("model.xml", served.ir_xml.numpy().tobytes())
            archive.writestr("model.bin", served.ir_weights.numpy().tobytes())
        return path

    def load(self, path: Path, threads: int | None, compiled: bool) -> OpenVinoModule:
        """From an ``.ovz`` artifact, or a folder holding an exported ``model.xml`` + ``model.bin``."""
        if path.is_dir():
            return OpenVinoModule((path / "model.xml").read_bytes(), (path / "model.bin").read_bytes(), threads)
        with zipfile.ZipFile(path) as archive:
            return OpenVinoModule(archive.read("model.xml"), archive.read("model.bin"), threads)

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        """The IR pair (``model.xml`` + ``model.bin``) in the folder ``path``; float models convert here."""
        served = model if isinstance(model, OpenVinoModule) else OpenVinoModule(*openvino_ir(model, 32, example))
        return self.load(served.export_ir(path), None, compiled=True)


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


RUNTIME = OpenVinoRuntime()
