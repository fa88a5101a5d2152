"""Bit-width stage: real fp16/bf16 dtypes, real int8 kernels, and simulated sub-8-bit.

* 32 bits: the float model unchanged.
* 16 bits: weights and activations in float16/bfloat16 (a real dtype; on AVX2 CPUs
  convolutions in these dtypes are much slower, which the search must measure).
* 8 bits, models with convolutions: FX graph-mode static post-training quantization
  with the ``x86`` qconfig mapping (per-channel weights, calibrated activations),
  executed by fbgemm/onednn int8 kernels. ``torch.ao.quantization`` warns that it is
  deprecated in torch 2.13, but it is the path that really runs int8 convolutions fast
  on this CPU (torchao's PT2E path needs static shapes under torch.compile; uncompiled
  it was slower than fp32).
* 8 bits, models with convolutions that torch.fx cannot trace (e.g. a ViT: its patch
  embedding is a convolution, its attention has data-dependent Python): the dynamic path
  below for their Linear layers, the convolutions staying float32 (``quant_path`` says
  ``dynamic-int8``), instead of no int8 at all.
* 8 bits, Linear-only models (e.g. Transformers): dynamic int8 (int8 weights,
  activations quantized per call), the fbgemm path that was faster than fp32 here;
  torchao's int8 configs were 2-15x slower on this CPU. Weights are per-tensor: the
  per-channel variant stores a float64 scale and int64 zero point per output channel,
  which on digits-transformer made the model 2.6x instead of 3.2x smaller at the same
  validation accuracy.
* 8 bits with quantization-aware fine-tuning (``qat``, conv models): FX
  ``prepare_qat_fx`` inserts fake-quant on weights and activations, the model is
  fine-tuned through it (a cached stage), then converted to the same int8 kernels as the
  static path. Linear-only models quantize dynamically (activations are quantized per
  call, so there is nothing for QAT to learn there): such candidates are rejected.
* below 8 bits: per-channel symmetric fake-quant of Conv/Linear weights. Accuracy is
  real; speed is fp32 speed and size is computed from packed bits, so every number is
  labelled ``simulated``.

Every serving module takes the task's inputs as they are (float32 features, int64 ids)
and returns float32 logits, as a deployed model would, so accuracy and latency are
measured on the same interface.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from slimsearch.evaluators.memory import state_dict_bytes
from slimsearch.spaces import InvalidCandidate


@dataclass
class QuantizedModel:
    serving: nn.Module
    path: str
    """Which quantization implementation ran (recorded as a trial tag)."""
    model_bytes: int
    """Serialized weight bytes (computed from packed bits when simulated)."""
    simulated: bool


class CastingWrapper(nn.Module):
    """Runs ``inner`` in ``dtype`` behind a float32 interface. Only floating inputs are
    cast: integer inputs (token ids, indices) pass unchanged, as float16 cannot hold
    every id (7545 -> 7544) and bfloat16 fewer still."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype) if x.is_floating_point() else x).float()


QatTrainer = Callable[[nn.Module], None]
"""Fine-tunes a QAT-prepared model in place (training loop, cache and monitor live in ``stages``)."""


def quantize(model: nn.Module, bits: int, float_dtype: str | None, calibration: torch.Tensor,
             qat: QatTrainer | None = None) -> QuantizedModel:
    """Return a serving module for ``model`` at ``bits`` (the input model is not modified);
    with ``qat``, 8-bit conv models are fine-tuned through fake-quant before conversion."""
    model = copy.deepcopy(model).eval()
    if bits == 32:
        return QuantizedModel(model, "fp32", state_dict_bytes(model), simulated=False)
    if bits == 16:
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[float_dtype or "float16"]
        wrapped = CastingWrapper(model, dtype).eval()
        return QuantizedModel(wrapped, str(float_dtype or "float16"), state_dict_bytes(wrapped), simulated=False)
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if bits == 8 and qat is not None:
        if not has_conv:
            raise InvalidCandidate("quantization-aware fine-tuning needs the static int8 path (conv models); "
                                   "this model quantizes dynamically: drop true from space.quantize.qat")
        serving = _qat_int8(model, calibration, qat)
        return QuantizedModel(serving, "fx-qat-int8-x86", state_dict_bytes(serving), simulated=False)
    if bits == 8 and has_conv and (serving := _static_int8(model, calibration)) is not None:
        return QuantizedModel(serving, "fx-static-int8-x86", state_dict_bytes(serving), simulated=False)
    if bits == 8:
        serving, tables = _dynamic_int8(model, calibration)
        return QuantizedModel(serving, "dynamic-int8" + ("-emb8" if tables else ""), state_dict_bytes(serving),
                              simulated=False)
    return _fake_quant_weights(model, bits)


def _static_int8(model: nn.Module, calibration: torch.Tensor) -> nn.Module | None:
    """The FX static int8 model, or ``None`` when the model cannot be traced by torch.fx."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        # torch.ao.quantization announces its deprecation on every call (see module docstring);
        # the path still runs real int8 kernels, and the trial's quant_path tag records it.
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (calibration[:1],))
        except Exception:  # noqa: BLE001 - not FX-traceable: a property of the model, served dynamically instead
            return None
        with torch.inference_mode():
            for start in range(0, len(calibration), 64):
                prepared(calibration[start : start + 64])
        return convert_fx(prepared).eval()


def _qat_int8(model: nn.Module, calibration: torch.Tensor, train: QatTrainer) -> nn.Module:
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice, as for the static path
        try:
            prepared = prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping("x86"), (calibration[:1],))
        except Exception as exc:
            raise InvalidCandidate(f"int8 quantization-aware training cannot trace this model: {exc}") from exc
        train(prepared)
        return convert_fx(prepared.eval()).eval()


def _dynamic_int8(model: nn.Module, calibration: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """Linear and recurrent (LSTM, GRU) layers with int8 weights and per-call activation
    scales, plus int8 embedding tables (weight-only: a transformer's vocabulary is its largest
    tensor, 11.7 M of MiniLM's 22.7 M parameters); returns the model and the names of the
    tables it quantized. A table is quantized only if the model looks it up with contiguous
    indices, as torch's int8 lookup requires (Hugging Face token-type ids are an expanded,
    stride-0 buffer): found by one forward pass on calibration rows."""
    from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

    tables = _contiguously_indexed_tables(model, calibration[:2])
    spec: dict[object, object] = {nn.Linear: default_dynamic_qconfig, nn.LSTM: default_dynamic_qconfig,
                                  nn.GRU: default_dynamic_qconfig,
                                  **{name: float_qparams_weight_only_qconfig for name in tables}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notice, as for the static path
        return quantize_dynamic(model, spec, dtype=torch.qint8).eval(), tables


def _contiguously_indexed_tables(model: nn.Module, rows: torch.Tensor) -> list[str]:
    indexed: dict[str, bool] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            indexed[name] = indexed.get(name, True) and inputs[0].is_contiguous()
        return hook

    handles = [module.register_forward_pre_hook(record(name)) for name, module in model.named_modules()
               if isinstance(module, nn.Embedding)]
    try:
        with torch.no_grad():
            model(rows)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, contiguous in indexed.items() if contiguous]


def _fake_quant_weights(model: nn.Module, bits: int) -> QuantizedModel:
    qmax = 2 ** (bits - 1) - 1
    packed_bytes = 0
    quantized_names: set[str] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            weight = module.weight
            per_channel_max = weight.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-8)
            scale = (per_channel_max / qmax).float()
            zero_point = torch.zeros(len(scale), dtype=torch.int32)
            weight.copy_(torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -qmax - 1, qmax))
            packed_bytes += (weight.numel() * bits + 7) // 8 + 4 * len(scale)  # packed ints + fp32 scales
            quantized_names.add(f"{name}.weight" if name else "weight")
    other_bytes = sum(t.numel() * t.element_size() for k, t in model.state_dict().items() if k not in quantized_names)
    return QuantizedModel(model, f"fake-quant-w{bits}", packed_bytes + other_bytes, simulated=True)
